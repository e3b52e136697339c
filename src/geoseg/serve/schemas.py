"""Request and response models of the REST API, and the error answers each route declares in its OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Coord = Annotated[float, Field(allow_inf_nan=False)]


class PredictRequest(BaseModel):
    """A prompt on an open image. Coordinates are pixels ``(x, y)`` unless ``coords`` is ``lonlat``."""

    model_config = ConfigDict(extra="forbid")

    points: list[tuple[Coord, Coord]] = Field(default_factory=list, max_length=64,
                                              description="(x, y) points; pixel or lon/lat per `coords`")
    labels: list[Literal[0, 1]] | None = Field(None, max_length=64,
                                               description="1 positive, 0 negative; default all positive")
    box: tuple[Coord, Coord, Coord, Coord] | None = Field(None, description="x0, y0, x1, y1")
    text: str | None = Field(None, max_length=2000, description="a referring expression or reasoning query")
    task: Literal["interactive", "referring", "reasoning"] | None = None
    coords: Literal["pixel", "lonlat"] = "pixel"
    include: list[Literal["rle", "geojson", "overlay"]] = Field(
        default_factory=lambda: ["rle", "geojson"], description="what the JSON answer carries")
    simplify: float = Field(0.0, description="the answer's GeoJSON polygons (`include` geojson or "
                            "?format=geojson): simplify them as one coverage, tolerance in pixels (1 removes the "
                            "pixel staircases; 0 keeps the exact outlines), as the download's `simplify`")
    min_area: float = Field(0.0, description="the answer's GeoJSON polygons: fill holes and drop polygons "
                            "smaller than this, in the `area` unit, as the download's `min_area`")


class ReferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., max_length=4096)
    bands: list[int] | None = Field(None, max_length=3)


class BandsRequest(BaseModel):
    """Show an open image with other bands: 1-based indices for red, green, blue (or one band as grey)."""

    model_config = ConfigDict(extra="forbid")
    bands: list[int] = Field(..., min_length=1, max_length=3, description="e.g. [3, 2, 1], or [4] for grey")
    close_previous: bool = Field(False, description="close the image the request names once the new bands are open, "
                                 "unless it was opened more than once (another tab or client uses it)")


class ImageInfo(BaseModel):
    image_id: str
    name: str
    width: int
    height: int
    bands: int = Field(..., description="how many bands the file has")
    dtype: str
    georeferenced: bool
    geo: dict | None
    rgb_bands: list[int] = Field(..., description="the 1-based bands shown (and segmented) as red, green, blue; "
                                 "one band is shown as grey")
    band_names: list[str] = Field(..., description="per band: its description (e.g. B8), else its declared "
                                  "colour (red, green, blue, ...), else empty")
    rgb_declared: bool = Field(..., description="the file declares which bands are red, green and blue")
    embedding_cached: bool = False
    embed_ms: float = 0.0


class PredictResponse(BaseModel):
    image_id: str
    mask_id: str
    score: float
    area_px: int
    bbox: list[int] | None = Field(None, description="x0, y0, x1, y1 (exclusive) of the mask in pixels")
    prompt: str
    embedding_cached: bool
    timing_ms: dict[str, float]
    rle: dict | None = None
    geojson: dict | None = None
    overlay_png: str | None = Field(None, description="data: URL of a transparent PNG colouring the mask")
    provenance: dict
    downloads: dict[str, str]
    filenames: dict[str, str] = Field(..., description="per format: the file name its download is saved under "
                                      "(`<image name stem>_<mask_id>.<format>`, as in Content-Disposition)")
    hint: str | None = Field(None, description="when the mask is empty: why, when the point or box lies on the "
                             "image's nodata pixels only, else the backend's advice (what it can find)")
    notes: list[str] = Field(default_factory=list, description="unified backend: a text instruction unlike the "
                             "model's training instructions, whose answer may not follow it, and what to do")


class ErrorResponse(BaseModel):
    """Every error answer: one line naming the problem and, in brackets, the fix."""

    detail: str = Field(..., description="the problem (the fix)")
    problem: str | None = Field(None, description="the problem alone (errors the client can fix)")
    fix: str | None = Field(None, description="the fix alone (errors the client can fix)")
    code: str | None = Field(None, description="why an image id is unknown: `image_dropped` (more images were "
                             "opened after it than the server keeps), `image_closed` (deleted, or replaced by "
                             "the same file with other bands), `unknown_image`; why a mask id is: `mask_dropped` "
                             "(410: more masks were predicted on its image after it than the server keeps), "
                             "`unknown_mask`")


_ERROR_TEXT = {
    400: "not an image / unsupported format / truncated file, empty upload, bad bands, bad path",
    403: "a referenced path outside --image-root (or referencing disabled)",
    404: "unknown image id or mask id",
    410: "a mask dropped for newer ones on its image (predict again)",
    413: "upload, JSON body or image above the server's limits",
    422: "malformed JSON, unknown fields, wrong types, a prompt that cannot be applied",
    500: "an internal error (the server keeps serving)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for these error statuses, all answered as :class:`ErrorResponse`."""
    return {c: {"model": ErrorResponse, "description": _ERROR_TEXT[c]} for c in codes}


BINARY = {"schema": {"type": "string", "format": "binary"}}
MASK_FILES = {"image/png": BINARY, "application/geo+json": {"schema": {"type": "object"}}, "image/tiff": BINARY}
