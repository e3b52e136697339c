"""One scene in flight: plan its windows, paint results in plan order, finish or abort its outputs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from geoseg.batch.jobs import BatchOptions
from geoseg.batch.markers import _scene_outputs
from geoseg.batch.outcomes import SceneOutcome
from geoseg.prompts import Prompt


class _SceneRun:
    """One scene in flight: its source, plan, writer and the results waiting for their turn.

    Results may arrive in any order; they are painted in plan order (the writer's
    first-come claim of overlapping pixels must not depend on scheduling), and the
    writer is opened only when the scene's turn to paint comes, so a single scene's
    scratch files are open at a time.
    """

    def __init__(self, scene: Path, out_dir: Path, prompts: Sequence[Prompt], opts: BatchOptions,
                 provenance: dict) -> None:
        from geoseg.pipeline import (
            group_tasks,
            input_provenance,
            layer_prompts,
            plan_windows,
            prepare_prompts,
        )
        from geoseg.raster.io import open_source
        from geoseg.segmenters import shares_windows
        from geoseg.vector import check_vector_crs

        self.scene = scene
        self.t0 = time.perf_counter()
        self.outputs = _scene_outputs(scene, out_dir, opts)
        self.simplify, self.min_area = opts.simplify, opts.min_area  # how the writer shapes the polygons
        self.source = open_source(str(scene), opts.bands)
        try:
            if "vector" in self.outputs:
                check_vector_crs(self.outputs["vector"], self.source)
            self.prompts = prepare_prompts(self.source, list(prompts), opts.prompt_crs)
            if opts.prompt_layer is not None:
                self.prompts += layer_prompts(opts.prompt_layer, self.source, self.prompts)
            self.groups = group_tasks(plan_windows(self.source.width, self.source.height, self.prompts,
                                                   opts.tile_size, opts.overlap,
                                                   shared=shares_windows(opts.backend)))
        finally:
            self.source.close()  # reopened lazily by reads; workers get a pickled copy
        self.provenance = {**provenance, "prompts": [p.to_dict() for p in self.prompts],
                           "input": input_provenance(self.source)}
        if opts.prompt_layer is not None:
            self.provenance["prompt_file"] = opts.prompt_layer.provenance()
        self.writer = None
        self.next = 0
        self.waiting: dict[int, list] = {}
        self.failed = False

    def add(self, index: int, results: list) -> None:
        """Keep the results of group ``index`` until its turn."""
        self.waiting[index] = results

    def paint_ready(self) -> int:
        """Paint every group whose turn has come (opening the writer first); return how many."""
        if self.writer is None:
            from geoseg.raster.writer import SceneWriter

            self.writer = SceneWriter(self.source, self.outputs["mask"], self.prompts, self.provenance,
                                      score_raster=self.outputs.get("score_raster"),
                                      vector=self.outputs.get("vector"), simplify=self.simplify,
                                      min_area=self.min_area)
            self.writer.open()
        painted = 0
        while self.next in self.waiting:
            for r in self.waiting.pop(self.next):
                self.writer.add(r)
            self.next += 1
            painted += 1
        return painted

    @property
    def complete(self) -> bool:
        return self.next == len(self.groups)

    def finish(self) -> SceneOutcome:
        try:
            summary = self.writer.finish()
        finally:
            self.writer.close()
            self.writer = None
            self.source.close()
        km2 = None
        src = self.source
        if src.crs is not None and src.crs.is_projected:
            t = src.transform
            factor = float(src.crs.linear_units_factor[1] or 1.0)
            km2 = abs(t.a * t.e - t.b * t.d) * factor * factor * src.width * src.height / 1e6
        return SceneOutcome(
            scene=str(self.scene), status="done", outputs=dict(summary.outputs), n_windows=len(self.groups),
            mask_pixels=summary.mask_pixels, mask_area=summary.mask_area, area_unit=summary.area_unit,
            scene_km2=km2, seconds=round(time.perf_counter() - self.t0, 3),
        )

    def abort(self) -> None:
        """Drop everything of this scene; no partial output stays behind."""
        self.failed = True
        self.waiting.clear()
        try:
            if self.writer is not None:
                self.writer.close(abort=True)
                self.writer = None
        finally:
            self.source.close()
