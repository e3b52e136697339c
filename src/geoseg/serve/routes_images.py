"""Routes that open and close images: upload, open by path, list, get, delete, preview."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from geoseg.digest import sha256_file
from geoseg.errors import InputError, reason
from geoseg.serve import outputs
from geoseg.serve.context import ServerContext
from geoseg.serve.errors import ForbiddenPathError
from geoseg.serve.images import (
    ALLOWED_DRIVERS,
    ImageRecord,
    make_image_id,
    open_image,
    sniff_driver,
    unsupported_format_error,
)
from geoseg.serve.schemas import BINARY, BandsRequest, ImageInfo, ReferenceRequest, error_responses
from geoseg.serve.sessions import Session, UnknownImageError


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` with the bytes of ``source``: a hard link where the filesystem allows, else a copy."""
    tmp = target.with_name(target.name + ".part")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def image_routes(ctx: ServerContext) -> APIRouter:
    """The image routes of one server."""
    router = APIRouter()
    store, uploads, roots, max_pixels = ctx.store, ctx.uploads, ctx.roots, ctx.max_pixels
    upload_limit, upload_rule = ctx.upload_limit, ctx.upload_rule

    def _info(sess: Session, cached: bool = True) -> ImageInfo:
        return ImageInfo(**sess.record.to_dict(), embedding_cached=cached, embed_ms=round(sess.embed_ms, 2))

    def _open(path: Path, name: str, bands: tuple[int, ...] | None, image_id: str, sidecars: bool,
              digest: str, replaces: str | None = None) -> ImageInfo:
        """Open ``path`` as ``image_id`` (or count the open one as opened again); ``replaces``: see ``store.add``."""
        try:
            existing = store.reopen(image_id)  # opened once more: a band change elsewhere does not close it
        except UnknownImageError:
            existing = None
        if existing is not None:
            if replaces is not None:
                store.release(replaces, replaced_by=image_id)
            return _info(existing, cached=store.ensure_embedding(existing))
        record: ImageRecord = open_image(path, name=name, bands=bands, max_pixels=max_pixels, image_id=image_id,
                                         sidecars=sidecars, digest=digest)
        sess = store.add(record, embed=False, replaces=replaces)
        cached = store.ensure_embedding(sess)
        return _info(sess, cached)

    def _parse_bands(bands: str | list[int] | None) -> tuple[int, ...] | None:
        if bands is None or bands == "":
            return None
        if isinstance(bands, str):
            try:
                return tuple(int(b) for b in bands.split(","))
            except ValueError:
                raise InputError(f"cannot read bands {bands!r}", "give 1-based indices such as 4,3,2") from None
        return tuple(bands) or None  # [] means the default, like no bands at all

    @router.post("/api/images", status_code=201, response_model=ImageInfo, responses=error_responses(400, 413, 422, 500))
    def upload_image(file: UploadFile = File(..., description="GeoTIFF, JPG or PNG"),
                     bands: str | None = Form(None, description="1-based R,G,B band indices, e.g. 4,3,2")) -> ImageInfo:
        """Upload an image and compute its embedding once (same file again = same id, cached)."""
        band_t = _parse_bands(bands)
        name = Path(file.filename or "image").name or "image"
        updir = uploads.path()
        fd, tmp = tempfile.mkstemp(dir=updir, suffix=".part")  # never the client's name: it may be anything
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := file.file.read(1 << 20):
                    size += len(chunk)
                    if size > upload_limit:
                        raise upload_rule.error()
                    out.write(chunk)
            if size == 0:
                raise InputError("the uploaded file is empty", "send a GeoTIFF, JPG or PNG file")
            driver = sniff_driver(tmp)
            if driver is None:  # refused before GDAL sees it (a .vrt could read other files on the server)
                raise unsupported_format_error(name)
            digest = sha256_file(tmp)
            image_id = make_image_id(digest, band_t, name)  # the same file under another name: another image
            final = updir / f"{image_id}{ALLOWED_DRIVERS[driver]}"
            try:
                store.get(image_id)
                return _open(final, name, band_t, image_id, False, digest)  # already open: reuse it, its embedding
            except UnknownImageError:
                pass
            os.replace(tmp, final)
            tmp = str(final)  # removed below if it cannot be opened
            info = _open(final, name, band_t, image_id, False, digest)
            tmp = None
            return info
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

    @router.post("/api/images/reference", status_code=201, response_model=ImageInfo,
              responses=error_responses(400, 403, 413, 422, 500))
    def reference_image(req: ReferenceRequest) -> ImageInfo:
        """Open a file already on the server (only under the server's ``--image-root`` folders)."""
        if not roots:
            raise ForbiddenPathError("opening server-side paths is disabled",
                                     "start the server with --image-root DIR, or upload the file")
        if "\x00" in req.path:
            raise InputError("the path contains a NUL character", "send the file's path as plain text")
        try:
            path = Path(req.path).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # a symlink loop, a name too long, ...
            raise InputError(f"cannot resolve the path {req.path!r} ({reason(exc)})", "check the path") from None
        if not any(path == r or r in path.parents for r in roots):
            raise ForbiddenPathError(f"{req.path} is outside the allowed image roots",
                                     f"use a file under {', '.join(map(str, roots))}")
        try:
            is_file = path.is_file()
        except OSError:
            is_file = False
        if not is_file:
            raise InputError(f"no such file: {req.path}", "check the path")
        band_t = _parse_bands(req.bands)
        digest = sha256_file(path)
        return _open(path, path.name, band_t, make_image_id(digest, band_t, path.name), True, digest)

    @router.post("/api/images/{image_id}/bands", status_code=201, response_model=ImageInfo,
                 responses=error_responses(400, 404, 422, 500))
    def show_bands(image_id: str, req: BandsRequest) -> ImageInfo:
        """Open an image again with other bands as red, green, blue (or one as grey): a new image id.

        The file is read again (no upload). Prompts in pixels apply to both. With ``close_previous``
        the image named is closed once the new bands are open (so it does not hold one of the
        ``--max-images`` places), unless it was opened more than once: another tab or client uses it.
        """
        sess = store.get(image_id)
        rec = sess.record
        band_t = tuple(req.bands)
        if band_t == rec.rgb_bands:
            return _info(sess, cached=store.ensure_embedding(sess))
        return _open_bands(sess, band_t, replaces=image_id if req.close_previous else None)

    def _open_bands(sess: Session, band_t: tuple[int, ...], replaces: str | None) -> ImageInfo:
        """The file of ``sess`` opened with ``band_t``: read in place, or an upload linked to a file of its own.

        ``replaces`` is closed (see ``store.release``) only once the new bands are open: a failure keeps it.
        """
        rec, image_id = sess.record, sess.record.image_id
        new_id = make_image_id(rec.digest, band_t, rec.name)
        source = Path(rec.source_path)
        if not uploads.holds(source):  # a file under an --image-root: read it where it is
            return _open(source, rec.name, band_t, new_id, True, rec.digest, replaces)
        final = source.with_name(new_id + source.suffix)  # an upload: a file of its own, removed with its image
        try:
            store.get(new_id)
            return _open(final, rec.name, band_t, new_id, False, rec.digest, replaces)
        except UnknownImageError:
            pass
        try:
            _link_or_copy(source, final)
        except OSError:
            store.get(image_id)  # dropped meanwhile: this says so
            raise InputError(f"the file of image {image_id!r} cannot be read again", "open the image again") from None
        try:
            return _open(final, rec.name, band_t, new_id, False, rec.digest, replaces)
        except BaseException:
            final.unlink(missing_ok=True)
            raise

    @router.get("/api/images", responses=error_responses(500))
    def list_images() -> list[ImageInfo]:
        """Open images, most recently used last."""
        return [_info(s) for s in store.list()]

    @router.get("/api/images/{image_id}", response_model=ImageInfo, responses=error_responses(404, 422, 500))
    def get_image(image_id: str) -> ImageInfo:
        return _info(store.get(image_id))

    @router.delete("/api/images/{image_id}", status_code=204, responses=error_responses(404, 422, 500))
    def delete_image(image_id: str) -> Response:
        store.remove(image_id)
        return Response(status_code=204)

    @router.get("/api/images/{image_id}/preview.jpg", response_class=Response,
             responses={200: {"content": {"image/jpeg": BINARY}, "description": "the display RGB as JPEG"},
                        **error_responses(404, 422, 500)})
    def preview(image_id: str, max_side: int = Query(2048, ge=64, le=8192)) -> Response:
        """The display RGB (stretched bands) as JPEG, for the map page."""
        sess = store.get(image_id)
        return Response(outputs.preview_jpeg(sess.record, max_side), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    return router
