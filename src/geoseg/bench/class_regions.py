"""The whole region of a category in a tile, read from the data engine's own source adapters.

Used by the ``category-region`` baseline: for a sample built by the data engine (shards,
the benchmark split), the answer is every pixel of the category the instruction names —
from the ground-truth class map (or, for instance-only sources such as the field parcels,
every instance of that class) — ignoring attributes, relations and reasoning. It is what a
perfect semantic segmenter that read only the category would return: the bar a referring or
reasoning model must clear to show it used the rest of the instruction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from geoseg.errors import InputError

log = logging.getLogger(__name__)


class ClassRegions:
    """Category regions of engine-built rows; scenes are loaded on demand (the last few kept).

    Args:
        sources: the build config's source entries (``type``, ``path``, ``splits``,
            ``options``) with paths that resolve on this machine.
    """

    def __init__(self, sources: Sequence[Mapping]) -> None:
        self.sources = {str(s["type"]): s for s in sources}
        self._scenes: dict[tuple[str, str], object] = {}
        self._refs: dict[str, dict] = {}

    def _scene(self, source: str, scene: str):
        key = (source, scene)
        if key not in self._scenes:
            from geoseg.data.sources import get_source

            spec = self.sources.get(source)
            if spec is None:
                raise InputError(f"no source {source!r} in the build config", "materialise the split again")
            adapter = get_source(source, spec["path"], splits=spec.get("splits") or {}, **(spec.get("options") or {}))
            if source not in self._refs:
                self._refs[source] = {r.scene: r for r in adapter.scenes()}
            ref = self._refs[source].get(scene)
            if ref is None:
                raise InputError(f"scene {scene!r} not found in source {source} at {spec['path']}",
                                 "the data changed since the benchmark was built")
            if len(self._scenes) >= 4:  # rows come grouped by tile: a few scenes in memory are enough
                self._scenes.pop(next(iter(self._scenes)))
            self._scenes[key] = adapter.load(ref)
            log.debug("loaded class map of %s/%s", source, scene)
        return self._scenes[key]

    def region(self, source: str, scene: str, window: Mapping[str, int], category: str) -> np.ndarray:
        """Boolean ``H x W`` mask of every pixel of ``category`` in the tile ``window`` of a scene."""
        sc = self._scene(source, scene)
        r0, c0 = int(window["row_off"]), int(window["col_off"])
        sl = (slice(r0, r0 + int(window["height"])), slice(c0, c0 + int(window["width"])))
        if category not in sc.classes:
            return np.zeros((int(window["height"]), int(window["width"])), bool)
        c = sc.classes.index(category)
        if sc.label is not None:
            return np.asarray(sc.label[sl] == c)
        inst = sc.instances[sl]
        cls_of = np.concatenate([[-1], np.asarray(sc.instance_class)])  # instance k -> class, 0 -> none
        return np.asarray(cls_of[inst] == c)
