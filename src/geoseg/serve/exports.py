"""A predicted mask as the files a client downloads: PNG, GeoJSON polygons or a georeferenced GeoTIFF."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from fastapi.responses import Response

from geoseg._version import __version__
from geoseg.errors import InputError
from geoseg.serve import outputs
from geoseg.serve.sessions import Session, StoredMask


def attachment(filename: str) -> str:
    """``Content-Disposition`` for ``filename`` (RFC 6266): an ASCII fallback plus the UTF-8 name."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    if fallback == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


FORMATS = ("png", "geojson", "tif")


def downloads(image_id: str, mask_id: str) -> dict[str, str]:
    """The download URLs of a mask, per format."""
    base = f"/api/images/{image_id}/masks/{mask_id}"
    return {fmt: f"{base}.{fmt}" for fmt in FORMATS}


def download_name(image_name: str, mask_id: str, fmt: str) -> str:
    """The one name a mask file is saved under: ``<image name stem>_<mask id>.<fmt>``.

    Used for ``Content-Disposition`` and given to the page (``filenames`` of a prediction), so a
    file saved from the page or with ``curl -OJ`` gets the same name; the mask id keeps the masks
    of one image apart. The stem is cut to 100 characters.
    """
    return f"{Path(image_name).stem[:100]}_{mask_id}.{fmt}"


def filenames(image_name: str, mask_id: str) -> dict[str, str]:
    """:func:`download_name` per format."""
    return {fmt: download_name(image_name, mask_id, fmt) for fmt in FORMATS}


def mask_geojson(sess: Session, stored: StoredMask) -> dict:
    """The mask's polygons as a GeoJSON FeatureCollection (lon/lat when the image is georeferenced)."""
    feats = outputs.mask_features(stored.mask, sess.record, stored.prompt.describe(), stored.score)
    return outputs.feature_collection(feats, sess.record, stored.provenance)


def mask_file(sess: Session, stored: StoredMask, fmt: str) -> Response:
    """The mask as a ``png``, ``geojson`` or ``tif`` attachment named by :func:`download_name`."""
    name = download_name(sess.record.name, stored.mask_id, fmt)
    if fmt == "png":
        return Response(outputs.mask_png(stored.mask), media_type="image/png",
                        headers={"Content-Disposition": attachment(name)})
    if fmt == "geojson":
        body = json.dumps(mask_geojson(sess, stored)).encode()
        return Response(body, media_type="application/geo+json",
                        headers={"Content-Disposition": attachment(name)})
    if fmt == "tif":
        tags = {"prompt": stored.prompt.describe(), "geoseg_provenance": stored.provenance,
                "model": stored.provenance.get("model", ""), "geoseg_version": __version__}
        return Response(outputs.mask_geotiff(stored.mask, sess.record, tags), media_type="image/tiff",
                        headers={"Content-Disposition": attachment(name)})
    raise InputError(f"unknown format {fmt!r}", "use png, geojson or tif")
