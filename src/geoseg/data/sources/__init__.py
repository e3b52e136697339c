"""Source adapters, looked up by name (``dubai``, ``dk_fields``, ``ukis``, ``coco``)."""

from __future__ import annotations

import importlib

from geoseg.data.sources.base import UNLABELED, Scene, SceneRef, Source
from geoseg.errors import InputError

ADAPTERS: dict[str, str] = {
    "dubai": "geoseg.data.sources.dubai:DubaiSource",
    "dk_fields": "geoseg.data.sources.dk_fields:DkFieldsSource",
    "ukis": "geoseg.data.sources.ukis:UkisSource",
    "coco": "geoseg.data.sources.coco:CocoSource",
}


def get_source(name: str, root: str, splits: dict[str, list[str]] | None = None, **options: object) -> Source:
    """Instantiate the adapter ``name`` for the data at ``root``."""
    target = ADAPTERS.get(name)
    if target is None:
        raise InputError(f"unknown source type {name!r}", f"use one of {', '.join(sorted(ADAPTERS))}")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls(root, splits=splits, **options)


__all__ = ["ADAPTERS", "UNLABELED", "Scene", "SceneRef", "Source", "get_source"]
