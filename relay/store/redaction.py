"""Never show a configured secret: which values to hide, and hiding them (``relay/redact.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from config.settings import Endpoint, Secret, Settings, Source
from relay.redact import redact as redact_secrets


def secrets(settings: Settings) -> list[str]:
    """Every configured secret long enough to be one (a short header value like "1" is not)."""
    found: list[Secret | None] = [settings.admin_token]
    items: list[Source | Endpoint] = [*settings.sources.values(), *settings.endpoints.values()]
    for item in items:
        for f in dataclasses.fields(item):
            value = getattr(item, f.name)
            found += list(value.values()) if isinstance(value, Mapping) else [value]
    values = {s.reveal() for s in found if isinstance(s, Secret) and len(s.reveal()) >= 6}
    return sorted(values, key=len, reverse=True)


def redact(value: Any, hidden: list[str]) -> Any:
    """``value`` with every configured secret hidden, in every encoding (see relay/redact.py)."""
    return redact_secrets(value, hidden)
