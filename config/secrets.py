"""Secrets: values read from the environment variables the file names, never shown in repr or logs.

The file only names variables (``secret_key_env = "TCO_SECRET"``); `SecretReader` reads them once at
load time and collects every unset one, so one error names them all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# ``${VAR}`` inside a header value ("Bearer ${ERP_TOKEN}")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Secret:
    """A secret value that never shows in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class AlertSecrets:
    webhook_url: Secret | None = None
    smtp_username: Secret | None = None
    smtp_password: Secret | None = None


class SecretReader:
    """Resolves the environment variables the file names, collecting every problem to report at once."""

    def __init__(self, env: Mapping[str, str], required: bool) -> None:
        self.env = env
        self.required = required
        self.problems: list[str] = []

    def get(self, key: str, var: str | None) -> Secret | None:
        if var is None:
            return None
        value = self.env.get(var)
        if not value:
            if self.required:
                self.problems.append(f"  {key} = {var!r}: environment variable {var} is not set")
            return None
        try:
            value.encode()
        except UnicodeEncodeError:
            # bytes that are not UTF-8 reach Python as surrogates: every signature check (the key's
            # .encode()) would raise, each notification a 500; said now, whether or not it is required
            self.problems.append(f"  {key} = {var!r}: environment variable {var} is not UTF-8")
            return None
        return Secret(value)

    def substitute(self, key: str, value: str) -> Secret | None:
        """``value`` with each ``${VAR}`` replaced; None (and a problem naming it) when a variable is unset."""
        values = {var: self.get(key, var) for var in ENV_REF.findall(value)}
        found = {var: v.reveal() for var, v in values.items() if v is not None}
        if len(found) < len(values):
            return None
        return Secret(ENV_REF.sub(lambda m: found[m.group(1)], value))
