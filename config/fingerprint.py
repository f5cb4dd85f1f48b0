"""The hash of a configuration, which each process reports so that disagreeing processes show up."""

from __future__ import annotations

import hashlib
import json

from config.settings import FileConfig


def config_hash(cfg: FileConfig) -> str:
    """12 hex digits of the validated file's canonical JSON.

    Hashing the validated model rather than the bytes means comments and key order do not count, and
    no secret is in it (the file only names the environment variables that hold them). Keys are
    sorted, so where a key is declared (config/endpoint.py's shared fields or the schema's own) does
    not count either.
    """
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
