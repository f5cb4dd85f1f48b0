"""docs/production.md and its runbooks name only what exists: every `relay …` command line parses with
the real parser, every configuration key is a key of the settings schema, every other identifier it
names (a log event, a problem kind, a refusal reason) is one the code writes, and the fingerprint
recipe gives what the ingress prints."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from config.settings import FileConfig, Secret
from relay.cli import build_parser
from relay.web.ingress import fingerprint

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "production.md"
TEXT = DOC.read_text(encoding="utf-8")
FENCED = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (found := _model(arg)) is not None:
            return found
    return None


def _fields(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    for info in model.model_fields.values():
        if (nested := _model(info.annotation)) is not None:
            names |= _fields(nested)
    return names


ALL_KEYS = _fields(FileConfig)


def _check_table(model: type[BaseModel], doc: dict[str, Any], where: str) -> None:
    for key, value in doc.items():
        assert key in model.model_fields, f"{where}{key} is not a configuration key"
        nested = _model(model.model_fields[key].annotation)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                assert nested is not None, f"{where}{key} is not a table"
                _check_table(nested, item, f"{where}{key}.")


def _relay_commands() -> list[list[str]]:
    """The arguments of every `relay …` command in a code block or an inline code span."""
    lines = [line for _, block in FENCED.findall(TEXT) for line in block.splitlines()]
    lines += re.findall(r"`([^`\n]+)`", FENCED.sub("", TEXT))
    found = []
    for line in lines:
        line = line.split(" #")[0].replace("ExecStart=", "")
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        # the command `relay` or `…/bin/relay`, not the user of `sudo -u relay`
        starts = [
            i
            for i, w in enumerate(words)
            if (w == "relay" or w.endswith("/bin/relay")) and (i == 0 or words[i - 1] != "-u")
        ]
        if starts and len(words) > starts[0] + 1:
            found.append(words[starts[0] + 1 :])
    return found


COMMANDS = _relay_commands()


def test_the_runbooks_name_commands() -> None:
    # the check below must have something to check: the doc's commands were found
    names = {next(w for w in args if not w.startswith("-") and "/" not in w) for args in COMMANDS}
    assert {"serve", "worker", "health", "reload", "notifications", "check-endpoints"} <= names, names


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_every_relay_command_in_production_md_parses(args: list[str]) -> None:
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"`relay {' '.join(args)}` in docs/production.md is not a valid command (exit {exc.code})")


def test_every_toml_block_uses_real_keys() -> None:
    blocks = [body for lang, body in FENCED.findall(TEXT) if lang == "toml"]
    assert blocks
    for body in blocks:
        _check_table(FileConfig, tomllib.loads(body), "")


def test_every_named_key_event_and_kind_exists() -> None:
    code = "\n".join(
        p.read_text(encoding="utf-8")
        for folder in ("relay", "workers", "config")
        for p in (ROOT / folder).rglob("*.py")
    )
    code += "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "relay").rglob("*.lua"))
    spans = re.findall(r"`([^`\n]+)`", FENCED.sub("", TEXT))
    checked = 0
    for span in spans:
        if m := re.fullmatch(r"\[(\w+(?:\.\w+)?)\] (\w+)", span):  # `[server] ack_after`
            section, key = m.groups()
            model: type[BaseModel] | None = FileConfig
            for part in section.split("."):
                assert model is not None and part in model.model_fields, f"[{section}] is not a section"
                model = _model(model.model_fields[part].annotation)
            assert model is not None and key in model.model_fields, f"[{section}] {key} is not a key"
            checked += 1
        elif m := re.fullmatch(r"\[+(\w+(?:\.\w+)?)\]+", span):  # `[[sources]]`, `[sources.reconcile]`
            model = FileConfig
            for part in m.group(1).split("."):
                assert model is not None and part in model.model_fields, f"{span} is not a section"
                model = _model(model.model_fields[part].annotation)
            checked += 1
        elif m := re.fullmatch(r"(\w+) = .+", span):  # `secret_key_previous_env = "…"`
            assert m.group(1) in ALL_KEYS, f"{m.group(1)} is not a configuration key"
            checked += 1
        elif re.fullmatch(r"[a-z]+(?:_[a-z0-9]+)+", span):  # a key, a log event, a problem kind, a reason
            assert span in ALL_KEYS or f'"{span}"' in code or f"'{span}'" in code, (
                f"`{span}` in docs/production.md is neither a configuration key nor written by the code"
            )
            checked += 1
    assert checked >= 15, checked


def test_the_fingerprint_recipe_matches_the_ingress() -> None:
    recipe = re.search(r"printf '%s' \"\$TCO_SECRET_KEY\" \| sha256sum \| cut -c1-8", TEXT)
    assert recipe, "the fingerprint recipe is not in docs/production.md"
    key = "Müller-key/2024+"
    out = subprocess.run(
        ["sh", "-c", "printf '%s' \"$TCO_SECRET_KEY\" | sha256sum | cut -c1-8"],
        env={"TCO_SECRET_KEY": key, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == fingerprint(Secret(key)) == hashlib.sha256(key.encode()).hexdigest()[:8]


def test_the_readme_links_it() -> None:
    assert "(docs/production.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_runbook_quotes_the_refusal_the_relay_gives() -> None:
    """Step 1 of the key rotation quoted "signature_mismatch: no signature matched; tried current …", a
    text the relay never writes: an operator matching `relay health`'s line to the runbook found neither."""
    from relay.protocol import SignatureError, parse_form, verify_signed
    from tests.support import ipn_fields, signed_body

    quoted = re.findall(r"signature_mismatch: ([^;`|]+); tried current", TEXT)
    assert quoted, "the runbook no longer quotes a refusal"
    fields = parse_form(signed_body(ipn_fields(), secret="the-new-key"))
    with pytest.raises(SignatureError) as refused:
        verify_signed(fields, [b"the-old-key"], "md5")
    assert refused.value.reason == "signature_mismatch"
    for text in quoted:
        assert text == refused.value.detail, (text, refused.value.detail)


def test_the_environment_file_holds_no_inline_comment() -> None:
    """systemd's EnvironmentFile= takes a comment only on a line of its own: after a value, ``# ...`` is
    part of the value. The example gave ``TCO_SECRET_KEY=...   # the IPN/LCN secret key (...)``, so an
    operator who filled in the key kept the comment in it, and every IPN was refused (bad signature)."""
    [block] = [body for _, body in FENCED.findall(TEXT) if body.startswith("# /etc/relay/relay.env")]
    values = {}
    for line in block.splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()  # as systemd reads an unquoted value
    assert {"REDIS_URL", "TCO_SECRET_KEY", "RELAY_ADMIN_TOKEN"} <= set(values), values
    assert not [key for key, value in values.items() if "#" in value], values
