"""Provenance JSON that fits the room an output format gives it and still parses.

Outputs carry their provenance (model, settings, prompts) as JSON in GeoTIFF tags and vector
layer metadata, with a size cap so that a prompt file of thousands of features does not
bloat every output. Cutting the JSON text at the cap left it unparsable (a 276-parcel
prompt file did); :func:`bounded_json` shortens the lists inside instead, and says how many
items it left out.
"""

from __future__ import annotations

import json
from typing import Any


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _cut_list(items: list, limit: int) -> list:
    """The longest prefix of ``items`` that, with a final ``{"omitted": n}``, dumps within ``limit``."""
    lo, hi = 0, len(items)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_dumps(items[:mid] + [{"omitted": len(items) - mid}])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return items[:lo] + [{"omitted": len(items) - lo}]


def bounded_json(value: Any, limit: int) -> str:
    """``value`` as JSON of at most ``limit`` characters that still parses.

    A list too long keeps its first items and ends with ``{"omitted": n}``; in a mapping,
    the longest lists are shortened that way first. When that cannot fit (a huge scalar),
    the result is ``{"truncated": true, "chars": <full length>}``.
    """
    text = _dumps(value)
    if len(text) <= limit:
        return text
    if isinstance(value, (list, tuple)):
        text = _dumps(_cut_list(list(value), limit))
    elif isinstance(value, dict):
        out = dict(value)
        lists = sorted((k for k, v in out.items() if isinstance(v, (list, tuple))),
                       key=lambda k: len(_dumps(out[k])), reverse=True)
        for key in lists:
            room = limit - (len(_dumps(out)) - len(_dumps(out[key])))
            out[key] = _cut_list(list(out[key]), room)
            text = _dumps(out)
            if len(text) <= limit:
                break
    if len(text) <= limit:
        return text
    return _dumps({"truncated": True, "chars": len(_dumps(value))})
