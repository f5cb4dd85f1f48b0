"""``[sources.reconcile]``: comparing a source's notifications with 2Checkout's order list.

Its own module so config/source.py stays one concern per screen; source.py embeds the model in
``SourceConfig``. What each key means, and what the relay does with it: docs/operations.md,
"Reconciliation".
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from config.wording import item

DEFAULT_API_URL = "https://api.2checkout.com/rest/6.0"


class ReconcileConfig(BaseModel):
    # extra="forbid": a misspelt key is an error that names it, as everywhere in the file
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the 2Checkout merchant code (Integrations > Webhooks & API); the API secret is the source's secret_key_env
    merchant_code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    api_url: str = Field(DEFAULT_API_URL, pattern=r"^https?://[^\s/?#]+[^\s?#]*$")
    # one listing every interval_seconds, across all workers; 5 s is the floor (tests), 600 s the default
    interval_seconds: float = Field(600, ge=5, le=86_400)
    # orders placed in the last lookback_hours are compared (the listing's StartDate/EndDate, by UTC day)
    lookback_hours: float = Field(48, gt=0, le=24 * 30)
    # an order is missing once it has been seen in a status this long without an IPN carrying it
    grace_minutes: float = Field(30, ge=0, le=7 * 24 * 60)
    include_test_orders: bool = False
    # one request of the listing must answer within this many seconds (then it is retried, then failing)
    timeout_seconds: float = Field(30, gt=0, le=300)

    @property
    def interval_ms(self) -> int:
        return round(self.interval_seconds * 1000)

    @property
    def grace_ms(self) -> int:
        return round(self.grace_minutes * 60_000)

    @property
    def lookback_ms(self) -> int:
        return round(self.lookback_hours * 3_600_000)


def retention_problems(retention_days: float, sources: list[tuple[str, ReconcileConfig | None]]) -> list[str]:
    """A pass reads the IPNs stored for each listed order: they must outlive the listing's window, or
    every order older than the retention is reported missing although its IPN came. The listing covers
    whole UTC days (StartDate is the day ``lookback_hours`` ago), so up to ``lookback_hours`` + 24 h."""
    problems = []
    for i, (name, cfg) in enumerate(sources):
        if cfg is not None and retention_days * 24 <= cfg.lookback_hours + 24:
            problems.append(
                f"{item('sources', i, name)}: reconcile.lookback_hours = {cfg.lookback_hours:g} needs "
                f"delivery.retention_days (now {retention_days:g}) longer than lookback_hours + 24 h "
                "(the listing covers whole days): IPNs expired before their order leaves the "
                "listing would make it missing"
            )
    return problems
