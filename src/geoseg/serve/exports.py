"""A predicted mask as the files a client downloads: PNG, GeoJSON polygons or a georeferenced GeoTIFF."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from fastapi.responses import Response

from geoseg._version import __version__
from geoseg.errors import GeosegError, InputError
from geoseg.serve import outputs
from geoseg.serve.sessions import Session, StoredMask
from geoseg.vector import check_vector_options, vector_provenance


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


class ExportOptionError(InputError):
    """A ``simplify`` / ``min_area`` the polygon export cannot take (answered 422, as other invalid parameters)."""


def check_export_options(fmt: str, simplify: float = 0.0, min_area: float = 0.0) -> None:
    """Refuse ``simplify`` / ``min_area`` that ``geoseg segment`` refuses (negative, NaN, infinite), or
    either one on a download that has no polygons, with an :class:`ExportOptionError` in the API's words.

    The values are checked by :func:`geoseg.vector.check_vector_options` (the command's rules and
    advice), its option names given as the query parameters.
    """
    try:  # the values; the format is checked below
        check_vector_options(simplify, min_area, vector=fmt, names=("simplify", "min_area"))
    except GeosegError as exc:
        raise ExportOptionError(exc.problem, exc.fix) from None
    given = [name for name, value in (("simplify", simplify), ("min_area", min_area)) if value]
    if given and fmt == "json":  # a predict answer without its GeoJSON
        raise ExportOptionError(f"{' and '.join(given)} shape{'s' if len(given) == 1 else ''} the GeoJSON "
                                "polygons, and this answer carries none",
                                "add \"geojson\" to include (or ask ?format=geojson), or leave "
                                f"{'it' if len(given) == 1 else 'them'} out")
    if given and fmt != "geojson":
        raise ExportOptionError(f"{' and '.join(given)} shape{'s' if len(given) == 1 else ''} the GeoJSON "
                                f"polygons, and the .{fmt} download is the mask raster",
                                f"download the .geojson, or leave {'it' if len(given) == 1 else 'them'} out: "
                                "the mask raster is never changed")


def mask_geojson(sess: Session, stored: StoredMask, simplify: float = 0.0, min_area: float = 0.0) -> dict:
    """The mask's polygons as a GeoJSON FeatureCollection (lon/lat when the image is georeferenced).

    ``simplify`` (pixels) and ``min_area`` (the ``area`` unit) shape the polygons as ``geoseg segment``'s
    ``--simplify`` / ``--min-area`` do (:func:`geoseg.serve.outputs.mask_features`); the collection's
    provenance records both under ``vector``, as the command's layers do.
    """
    feats = outputs.mask_features(stored.mask, sess.record, stored.prompt.describe(), stored.score,
                                  simplify=simplify, min_area=min_area)
    provenance = {**stored.provenance,
                  "vector": vector_provenance(simplify, min_area, outputs.area_unit(sess.record))}
    return outputs.feature_collection(feats, sess.record, provenance)


def mask_file(sess: Session, stored: StoredMask, fmt: str, simplify: float = 0.0, min_area: float = 0.0) -> Response:
    """The mask as a ``png``, ``geojson`` or ``tif`` attachment named by :func:`download_name`.

    ``simplify`` and ``min_area`` shape the GeoJSON's polygons (:func:`mask_geojson`); check them
    with :func:`check_export_options` first.
    """
    name = download_name(sess.record.name, stored.mask_id, fmt)
    if fmt == "png":
        return Response(outputs.mask_png(stored.mask), media_type="image/png",
                        headers={"Content-Disposition": attachment(name)})
    if fmt == "geojson":
        body = json.dumps(mask_geojson(sess, stored, simplify, min_area)).encode()
        return Response(body, media_type="application/geo+json",
                        headers={"Content-Disposition": attachment(name)})
    if fmt == "tif":
        tags = {"prompt": stored.prompt.describe(), "geoseg_provenance": stored.provenance,
                "model": stored.provenance.get("model", ""), "geoseg_version": __version__}
        return Response(outputs.mask_geotiff(stored.mask, sess.record, tags), media_type="image/tiff",
                        headers={"Content-Disposition": attachment(name)})
    raise InputError(f"unknown format {fmt!r}", "use png, geojson or tif")
