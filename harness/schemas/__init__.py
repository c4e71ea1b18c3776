"""The JSON Schemas (draft 2020-12) of every JSON file the project writes, shipped with the package, and
:func:`validate` to check a record against one (docs/schemas.md).

Each schema's ``$id`` is ``https://dlzta-harness.example/schemas/1/<kind>.schema.json``: a name, not an address
(nothing is fetched; the files are here), whose ``1`` is the format's version. A file the project writes names its
schema in a top-level ``"$schema"`` key (the github-action-benchmark files excepted: the action's format is a
list). The schemas refer to each other by relative ``$ref`` (``common.schema.json#/$defs/...``), resolved here
from this folder."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

BASE = "https://dlzta-harness.example/schemas/1/"
FOLDER = Path(__file__).parent
# kind -> what writes it
KINDS = {
    "run": "dlzta run --out",
    "compare": "dlzta compare --out",
    "lab": "dlzta report: OUT/labs/<lab>.json",
    "init-study": "dlzta report: OUT/labs/init_study.json",
    "results": "dlzta report: OUT/results.json",
    "precision": "dlzta report: OUT/labs/precision.json",
    "bench": "dlzta bench --out",
    "scaling": "dlzta bench --devices N,M,... --out (data-parallel scaling)",
    "github-action": "dlzta bench --github-action PREFIX (both files)",
    "selfcheck": "dlzta selfcheck --out (and $DLZTA_CACHE_DIR/selfcheck.json)",
    "common": "(definitions the others share)",
}


class SchemaError(ValueError):
    """A record that does not match its schema; the message names the first problem and where it is."""


def schema_id(kind: str) -> str:
    """The ``$id`` of ``kind``'s schema (the value of a written file's ``"$schema"`` key)."""
    if kind not in KINDS:
        raise KeyError(f"unknown schema kind {kind!r}; choose from {', '.join(KINDS)}")
    return f"{BASE}{kind}.schema.json"


def path(kind: str) -> Path:
    """The schema file of ``kind``."""
    schema_id(kind)
    return FOLDER / f"{kind}.schema.json"


@functools.cache
def load(kind: str) -> dict[str, Any]:
    """The schema of ``kind`` as a dict."""
    return json.loads(path(kind).read_text())


@functools.cache
def _validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resources((schema_id(k), DRAFT202012.create_resource(load(k))) for k in KINDS)
    return Draft202012Validator(load(kind), registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(kind: str, obj: Any) -> list[str]:
    """Every way ``obj`` fails ``kind``'s schema, one line each (``at $.path: message``); empty when it is valid."""
    found = sorted(_validator(kind).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [f"at {e.json_path}: {_short(e.message)}" for e in found]


def validate(kind: str, obj: Any) -> None:
    """SchemaError (naming the first problem) unless ``obj`` is a valid record of ``kind``."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(kind).iter_errors(obj))
    if error is not None:
        raise SchemaError(f"not a valid {kind} record: at {error.json_path}: {_short(error.message)}")


def is_valid(kind: str, obj: Any) -> bool:
    """Whether ``obj`` is a valid record of ``kind``."""
    return _validator(kind).is_valid(obj)


def stamped(kind: str, obj: dict) -> dict:
    """``obj`` with ``"$schema"`` (its schema's ``$id``) as its first key, as the project writes its files."""
    return {"$schema": schema_id(kind), **{k: v for k, v in obj.items() if k != "$schema"}}


def _short(message: str, limit: int = 160) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
