"""``[[sources]]``: one 2Checkout account (or one of its secrets) notifications are accepted from.

As for endpoints (config/endpoint.py): a key the processes use as written is a field of
`SourceFields`, inherited by the file's schema (`SourceConfig`) and the runtime object (`Source`);
only a key whose runtime form differs (a secret's variable name, a list read as a set, networks
parsed) is declared in both subclasses.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator

from config.reconcile import ReconcileConfig
from config.secrets import Secret, SecretReader
from config.sections import CHANNELS, Algo, Channel, EnvName, Model, Name, networks
from config.wording import item


class SourceFields(Model):
    """The keys the processes read exactly as the file writes them."""

    name: Name
    seller_id: str | None = Field(None, pattern=r"^[0-9]{1,20}$")
    min_signature: Algo = "md5"
    # flag an INS whose signed triple (sale_id, vendor_id, invoice_id) was already seen with the same
    # message_type but another message_id: the md5_hash does not cover the rest of the message
    flag_ins_replays: bool = True
    # compare with 2Checkout's order list (config/reconcile.py); off unless the table is there
    reconcile: ReconcileConfig | None = None
    # source_silent when no notification was accepted from this source for this many hours (off: None)
    expect_within_hours: float | None = Field(None, gt=0, le=24 * 365)


class SourceConfig(SourceFields):
    """A ``[[sources]]`` table as written: validated, no secret read."""

    secret_key_env: EnvName | None = None
    ins_secret_word_env: EnvName | None = None
    # during a key change-over both the new and the previous secret are accepted
    secret_key_previous_env: EnvName | None = None
    ins_secret_word_previous_env: EnvName | None = None
    # the channels this source accepts; leave "ins" out to turn INS off for it
    channels: list[Channel] = list(CHANNELS)
    # accept only from these networks (CIDRs, or the preset "2checkout"); empty: from anywhere
    allow_networks: list[str] = []

    _allow = field_validator("allow_networks")(classmethod(lambda cls, v: networks(v)))


class Source(SourceFields):
    """A source as the processes use it: its secrets read, its channels a set, its networks parsed."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    secret_key: Secret | None
    ins_secret_word: Secret | None
    previous_secret_key: Secret | None = None
    previous_ins_secret_word: Secret | None = None
    channels: frozenset[str] = frozenset(CHANNELS)
    allow_networks: tuple[Any, ...] = ()

    @property
    def secret_keys(self) -> list[Secret]:
        return [s for s in (self.secret_key, self.previous_secret_key) if s is not None]

    @property
    def ins_secret_words(self) -> list[Secret]:
        return [s for s in (self.ins_secret_word, self.previous_ins_secret_word) if s is not None]


def resolve(i: int, s: SourceConfig, secrets: SecretReader) -> Source:
    """The runtime source of the ``i``th table; a missing secret or a secret's missing companion is a
    problem in ``secrets``."""
    from config.networks import parse_networks

    where = item("sources", i, s.name)
    if s.secret_key_env is None and s.ins_secret_word_env is None:
        secrets.problems.append(f"  {where}: set secret_key_env, ins_secret_word_env or both")
    if s.reconcile is not None and s.secret_key_env is None:
        secrets.problems.append(
            f"  {where}: reconcile needs secret_key_env (2Checkout's API is signed with the account's secret key)"
        )
    if s.ins_secret_word_env is not None and s.seller_id is None:
        secrets.problems.append(
            f"  {where}: seller_id is required with ins_secret_word_env (INS md5_hash covers the seller id)"
        )
    return Source.model_construct(
        **{name: getattr(s, name) for name in SourceFields.model_fields},
        secret_key=secrets.get(f"{where}: secret_key_env", s.secret_key_env),
        ins_secret_word=secrets.get(f"{where}: ins_secret_word_env", s.ins_secret_word_env),
        previous_secret_key=secrets.get(f"{where}: secret_key_previous_env", s.secret_key_previous_env),
        previous_ins_secret_word=secrets.get(f"{where}: ins_secret_word_previous_env", s.ins_secret_word_previous_env),
        channels=frozenset(s.channels),
        allow_networks=parse_networks(s.allow_networks),
    )
