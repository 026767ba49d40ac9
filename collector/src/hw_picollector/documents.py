"""What the versioned JSON documents share (the status, the collector's state file, the
freshness report): the kind of a JSON value for messages that never show the value, and the
reading of a document's format version (no key: version 1; newer than this hwpc: refused)."""

from __future__ import annotations

import math
from typing import Any


def json_kind(value: Any) -> str:
    """A JSON value's kind, for messages (which never show the value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        try:
            return "a number" if math.isfinite(value) else "a non-finite number"
        except OverflowError:  # an integer beyond any float (``10**400``)
            return "a non-finite number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def format_version(obj: Any, *, document: str, key: str, newest: int, newer: str,
                   error: type[ValueError]) -> int:
    """The format version of ``document`` under ``key`` (1 when absent), from 1 to ``newest``;
    ``error`` naming the key otherwise (``newer``: what to do about a newer one)."""
    if not isinstance(obj, dict):
        raise error(f"the {document}: expected an object, got {json_kind(obj)}")
    if key not in obj:
        return 1
    version = obj[key]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise error(f"{key}: expected a whole number from 1 to {newest}, "
                    f"got {json_kind(version)}")
    if version > newest:
        said = f" {version}" if version < 1_000_000 else ""
        raise error(f"{key}{said}: newer than this hwpc reads (1 to {newest}){newer}")
    return version
