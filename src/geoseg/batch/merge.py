"""The merged vector layer: every scene's polygons in one EPSG:4326 layer with a ``scene`` field.

Its ``id`` numbers the merged layer's polygons 1..N: each scene's own layer numbers its polygons
from 1, and ids repeated across scenes are not ids (GDAL's GeoJSON reader takes an integer ``id``
property as the feature id and warns "Several features with id = 1", as QGIS shows). The scene's
own id stays in ``scene_id``, so ``(scene, scene_id)`` joins a merged polygon back to its scene's layer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def merge_vectors(parts: Sequence[tuple[str, str]], output: str) -> str:
    """Write every scene's polygons into one layer in EPSG:4326 with ``scene`` and ``scene_id`` fields.

    ``id`` is unique in the merged layer (1..N in scene order); ``scene_id`` is the polygon's
    ``id`` in its scene's own layer.

    Scenes without a georeference (pixel coordinates) cannot share a map layer and are
    left out with a warning.
    """
    import pyogrio.raw
    import shapely
    from pyproj import CRS, Transformer

    from geoseg.raster.writer import temp_path_for
    from geoseg.vector import replace_vector, vector_driver, vector_files

    driver = vector_driver(output)
    geoms: list = []
    cols: dict[str, list] = {"scene": [], "scene_id": [], "prompt": [], "score": [], "area": [], "feature": []}
    for scene, path in parts:
        meta, _, wkb, data = pyogrio.raw.read(path)
        if not meta.get("crs"):
            log.warning("%s has no CRS (pixel coordinates): left out of the merged layer", path)
            continue
        g = shapely.from_wkb(wkb) if len(wkb) else np.array([], dtype=object)
        crs = CRS.from_user_input(meta["crs"])
        if len(g) and crs != CRS.from_epsg(4326):
            tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
            g = shapely.transform(g, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        fields = list(meta["fields"])
        geoms.extend(g)
        cols["scene"] += [scene] * len(g)
        for name, field in (("scene_id", "id"), ("prompt", "prompt"), ("score", "score"), ("area", "area")):
            cols[name] += list(data[fields.index(field)]) if field in fields else [None] * len(g)
        cols["feature"] += list(data[fields.index("feature")]) if "feature" in fields else [-1] * len(g)
    tmp = temp_path_for(output)
    try:
        wkb_all = shapely.to_wkb(np.array(geoms, dtype=object)) if geoms else np.array([], dtype=object)
        arrays = [np.arange(1, len(geoms) + 1, dtype=np.int64), np.array(cols["scene"], dtype=object),
                  np.array(cols["scene_id"], dtype=np.int64), np.array(cols["prompt"], dtype=object),
                  np.array(cols["score"], dtype=np.float64), np.array(cols["area"], dtype=np.float64)]
        names = ["id", "scene", "scene_id", "prompt", "score", "area"]
        if any(f != -1 for f in cols["feature"]):
            arrays.append(np.array(cols["feature"], dtype=np.int64))
            names.append("feature")
        pyogrio.raw.write(tmp, wkb_all, arrays, names,
                          layer=Path(output).stem, driver=driver, geometry_type="Polygon", crs="EPSG:4326",
                          layer_options={"RFC7946": "YES"} if driver == "GeoJSON" else None)
        replace_vector(tmp, output)
    finally:
        for part in vector_files(tmp):
            if os.path.exists(part):
                os.unlink(part)
    log.info("merged %d polygons from %d scene(s) into %s", len(geoms), len(parts), output)
    return output
