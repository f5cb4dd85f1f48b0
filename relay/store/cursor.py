"""A listing's cursor: where the next page of ``relay/store/queries.py`` starts, opaque to clients.

URL-safe base64 of a small JSON list; a cursor is checked field by field on its way back in, so a
tampered or foreign one is a 400 naming ``cursor`` (never an error inside Redis), and one of a listing
with other filters is refused (its position means nothing there).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass

from relay.store.errors import BadParam
from relay.store.params import Filters

INDEX_KINDS = ("ref", "state", "ch", "src", "type", "all", "xstate")


@dataclass(frozen=True)
class Cursor:
    kind: str  # which index: ref | state | ch | src | type | all | xstate (a state across endpoints)
    score: int
    nid: str
    filters: str  # fingerprint of the filters it belongs to
    began: int = 0  # xstate: when (Redis ms) its first page was read
    token: str = ""  # xstate: names the listing's relay:list:{token} (merge.lua), random per listing

    def encode(self) -> str:
        doc = [1, self.kind, self.score, self.nid, self.filters, *([self.began, self.token] if self.began else [])]
        raw = json.dumps(doc, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str, filters: Filters) -> Cursor:
        try:
            doc = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            version, kind, score, nid, fp, *rest = doc
            began = rest[0] if rest else 0
            # a cursor of a relay before the listed set (issue 26) has no token: it goes on with a new one
            token = rest[1] if len(rest) > 1 else ""
            if (
                version != 1
                or kind not in INDEX_KINDS
                or not _is_int(score)
                or not isinstance(nid, str)
                or not isinstance(fp, str)
                or not _is_int(began)
                or not isinstance(token, str)
                or (token and not TOKEN.fullmatch(token))
                or len(rest) > 2
            ):
                raise ValueError(value)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise BadParam("cursor", value, "not a cursor this API returned") from None
        if fp != filters.fingerprint():
            raise BadParam(
                "cursor", value, "belongs to a listing with other filters; repeat the same filters or drop the cursor"
            )
        return cls(kind, score, nid, fp, began, token or (new_token() if began else ""))


def _is_int(value: object) -> bool:
    # JSON's true is a Python int: a tampered cursor must be refused here, not fail inside Redis
    return isinstance(value, int) and not isinstance(value, bool)


TOKEN = re.compile(r"[0-9a-f]{16}")


def new_token() -> str:
    return secrets.token_hex(8)
