"""What the dashboard's forms share: a form's text field, and one idempotency key per rendered form."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any


def idempotency_key() -> str:
    """One per rendered form: submitting the same form twice resends once."""
    return f"dash-{secrets.token_urlsafe(16)}"


def form_text(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None
