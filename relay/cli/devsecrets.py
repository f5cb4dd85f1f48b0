"""Development secrets for ``relay dev``: generated once, kept under .relay/, never used by ``serve``."""

from __future__ import annotations

import base64
import json
import secrets
import tomllib
from collections.abc import MutableMapping
from pathlib import Path

from config.settings import ConfigError

SECRETS_FILE = Path(".relay/dev-secrets.json")
ADMIN_TOKEN_ENV = "RELAY_ADMIN_TOKEN"  # [server] admin_token_env's default


def stored(var: str) -> str | None:
    """The development value kept for ``var``, if any."""
    try:
        values = json.loads(SECRETS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = values.get(var) if isinstance(values, dict) else None
    return value if isinstance(value, str) else None


def _kept() -> dict[str, str]:
    """The file's values; one cut short or edited into another shape is said in one line, not used."""
    if not SECRETS_FILE.exists():
        return {}
    try:
        values = json.loads(SECRETS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        values, reason = None, str(exc)
    else:
        reason = "expected a JSON object of variable names and their string values"
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ConfigError(f"{SECRETS_FILE}: cannot use it ({reason}); remove it and relay dev generates new values")
    return values


def fill_missing(config: Path, env: MutableMapping[str, str]) -> list[str]:
    try:
        raw = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []  # load_settings reports the problem properly
    wanted: list[tuple[str, str]] = []
    # the admin API's token too, so the dashboard is on in the quick start
    server = raw.get("server", {})
    admin_env = server.get("admin_token_env") if isinstance(server, dict) else None
    wanted.append((admin_env if isinstance(admin_env, str) else ADMIN_TOKEN_ENV, "token"))
    for src in raw.get("sources", []):
        for key in ("secret_key_env", "ins_secret_word_env"):
            if isinstance(src.get(key), str):
                wanted.append((src[key], "plain"))
    for ep in raw.get("endpoints", []):
        if isinstance(ep.get("signing_secret_env"), str):
            wanted.append((ep["signing_secret_env"], "whsec"))
    stored = _kept()
    generated = []
    for var, kind in wanted:
        if env.get(var):
            continue
        if var not in stored:
            stored[var] = (
                "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
                if kind == "whsec"
                else secrets.token_urlsafe(32 if kind == "token" else 24)
            )
        env[var] = stored[var]
        generated.append(var)
    if generated:
        try:
            SECRETS_FILE.parent.mkdir(parents=True, exist_ok=True)
            SECRETS_FILE.write_text(json.dumps(stored, indent=1))
            SECRETS_FILE.chmod(0o600)
        except OSError as exc:
            raise ConfigError(
                f"{SECRETS_FILE}: cannot keep the generated development values there ({exc.strerror}): run "
                f"relay dev in a directory it can write, or set {', '.join(generated)}"
            ) from None
    return generated
