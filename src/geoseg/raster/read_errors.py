"""GDAL's own reason for a failed read, which rasterio keeps only in the exception chain.

A truncated or corrupt scene fails a window read with rasterio's ``RasterioIOError: Read failed.
See previous exception for details.``; GDAL's messages (``TIFFReadEncodedStrip:Read error at
scanline 99; got 0 bytes, expected 2100``) are the chained ``CPLE_*`` exceptions. That chain does
not survive the way from a Dask worker to the client (GDAL's exceptions in it do not unpickle, and
Dask then sends a bare ``Exception('RasterioIOError(...)')``), so the worker words it first.
"""

from __future__ import annotations

from geoseg.errors import InputError, reason


def gdal_reason(exc: BaseException) -> str | None:
    """The first error GDAL raised on the way to ``exc`` (the root of its chain), or ``None``.

    GDAL stacks its messages: ``TIFFReadEncodedStrip:Read error at scanline 99; got 0 bytes,
    expected 2100``, then ``TIFFReadEncodedStrip() failed.``, then ``IReadBlock failed at X offset
    0, Y offset 99``; the first says what went wrong, the later ones only that something did.
    """
    from rasterio._err import CPLE_BaseError  # GDAL errors (CPLError); rasterio.errors does not re-export it

    root = None
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # a chain can loop back on itself
        seen.add(id(cur))
        if isinstance(cur, CPLE_BaseError):
            text = " ".join(str(getattr(cur, "errmsg", "") or cur).split())
            root = text or root
        cur = cur.__cause__ or cur.__context__
    return root


def unreadable(name: str, exc: BaseException) -> InputError | None:
    """A one-line :class:`InputError` naming scene ``name`` and GDAL's reason, when ``exc`` carries one."""
    why = gdal_reason(exc)
    if why is None:
        return None
    return InputError(f"cannot read {name}: {reason(Exception(why), limit=200)}",
                      "the file may be truncated or corrupt: copy it again; gdalinfo -checksum FILE reads every block")
