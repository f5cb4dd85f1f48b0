"""Development secrets for ``relay dev``: generated once, kept under .relay/, never used by ``serve``."""

from __future__ import annotations

import base64
import json
import secrets
import tomllib
from collections.abc import MutableMapping
from pathlib import Path

SECRETS_FILE = Path(".relay/dev-secrets.json")


def fill_missing(config: Path, env: MutableMapping[str, str]) -> list[str]:
    try:
        raw = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []  # load_settings reports the problem properly
    wanted: list[tuple[str, str]] = []
    for src in raw.get("sources", []):
        for key in ("secret_key_env", "ins_secret_word_env"):
            if isinstance(src.get(key), str):
                wanted.append((src[key], "plain"))
    for ep in raw.get("endpoints", []):
        if isinstance(ep.get("signing_secret_env"), str):
            wanted.append((ep["signing_secret_env"], "whsec"))
    stored: dict[str, str] = {}
    if SECRETS_FILE.exists():
        stored = json.loads(SECRETS_FILE.read_text())
    generated = []
    for var, kind in wanted:
        if env.get(var):
            continue
        if var not in stored:
            stored[var] = ("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
                           if kind == "whsec" else secrets.token_urlsafe(24))
        env[var] = stored[var]
        generated.append(var)
    if generated:
        SECRETS_FILE.parent.mkdir(parents=True, exist_ok=True)
        SECRETS_FILE.write_text(json.dumps(stored, indent=1))
        SECRETS_FILE.chmod(0o600)
    return generated
