"""The common interface of every source adapter.

An adapter turns one dataset layout into a list of light, picklable :class:`SceneRef`
(what the engine ships to Dask workers) and loads each into a :class:`Scene`: the
display RGB used for colour attributes, a per-pixel class map and/or an instance map.
Everything downstream (tiling, instances, filters, attributes, instructions) is
source-agnostic.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from geoseg.errors import InputError

UNLABELED = 255  # class-map value of pixels without a label (ignored, never a target)
NO_CROWD = -1  # crowd-map value of pixels without a crowd region
ANY_CLASS = -2  # crowd-map value of an object of unknown class: it may be of any class of the source


@dataclass(frozen=True)
class SceneRef:
    """One source image, as named in the shards (picklable, no pixels).

    Attributes:
        source: adapter name.
        scene: the image's id within the source (stable across builds).
        region: the split unit; scenes of one region always share a split.
        image_path: path of the image the rows point at.
        image_key: array name inside an ``.npz`` image, empty otherwise.
        bands: 1-based source bands shown as R, G, B.
        options: adapter-specific, picklable loading options (e.g. the mask path).
    """

    source: str
    scene: str
    region: str
    image_path: str
    image_key: str = ""
    bands: tuple[int, ...] = (1, 2, 3)
    options: tuple[tuple[str, object], ...] = ()

    def option(self, key: str, default: object = None) -> object:
        return dict(self.options).get(key, default)


@dataclass
class Scene:
    """A loaded scene.

    Attributes:
        ref: where it comes from.
        rgb: ``H x W x 3`` uint8 display image, rendered exactly as ``read_rgb`` renders rows.
        classes: class names; class-map values index this list.
        label: ``H x W`` uint8 class map (``UNLABELED`` = no label) or ``None``.
        instances: ``H x W`` int32 instance map (0 = none, k = instance k) for sources whose
            instances are given (polygons, COCO); ``None`` means instances are the
            8-connected components of the class map.
        instance_class: class index of instance k at position k-1.
        stretch: per display band ``[lo, hi]`` (scene-level), empty for uint8 data.
        exhaustive: whether every class present in the scene is labelled, so that a class
            absent from the label is really absent (needed for no-target instructions).
        notes: counted problems met while loading (e.g. ``mask_size_adjusted``).
        crowd: ``H x W`` int16 class map of pixels known to hold objects that are not single
            instances (COCO ``iscrowd``, bbox-only annotations), ``NO_CROWD`` elsewhere; a tile never
            asks a referring, class-level or no-target question about a class with crowd pixels in
            it. ``ANY_CLASS`` marks an object whose category the source does not list: it could be
            any class (a synonym), so such a tile asks none of those questions about any class.
            ``None`` = no crowd.
    """

    ref: SceneRef
    rgb: np.ndarray
    classes: list[str]
    label: np.ndarray | None = None
    instances: np.ndarray | None = None
    instance_class: np.ndarray | None = None
    stretch: list[list[float]] = field(default_factory=list)
    exhaustive: bool = True
    notes: dict[str, int] = field(default_factory=dict)
    crowd: np.ndarray | None = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


class Source(abc.ABC):
    """A dataset layout the engine can read."""

    name: str = ""
    #: split of regions not listed in the configured split map
    default_split: str = "test"

    def __init__(self, root: str, splits: dict[str, list[str]] | None = None, **options: object) -> None:
        self.root = str(root)
        self.splits = splits or {}
        self.options = options

    @abc.abstractmethod
    def scenes(self) -> list[SceneRef]:
        """Every scene of the source, in a stable order. Raises ``InputError`` when there is none."""

    @abc.abstractmethod
    def load(self, ref: SceneRef) -> Scene:
        """Read one scene's pixels and labels."""

    def source_notes(self) -> dict[str, int]:
        """Counted problems of the source as a whole, met by :meth:`scenes` (e.g. annotations of no image).

        They go to the manifest as ``notes/<name>`` next to the scenes' own notes; empty by default.
        """
        return {}

    def split_of(self, region: str) -> str:
        """The split a region belongs to (regions are never divided between splits).

        A source option ``split: NAME`` puts every region of the source in one split (a
        source kept whole for evaluation, or a COCO file that is already one split).
        """
        fixed = self.options.get("split")
        if fixed:
            return str(fixed)
        for split, regions in self.splits.items():
            if region in regions:
                return split
        return self.default_split


def check_size(label_hw: tuple[int, int], image_hw: tuple[int, int], what: str) -> None:
    """Raise when a label is more than ``MAX_SIZE_SLACK`` pixels off its image (then it is not its label)."""
    (lh, lw), (h, w) = label_hw, image_hw
    if abs(lh - h) > MAX_SIZE_SLACK or abs(lw - w) > MAX_SIZE_SLACK:
        raise InputError(f"{what} is {lw}x{lh} but its image is {w}x{h}",
                         f"pair each image with its own mask (sizes may differ by at most {MAX_SIZE_SLACK} px)")


def fit_to(arr: np.ndarray, height: int, width: int, fill: int) -> tuple[np.ndarray, bool]:
    """Crop or pad a label array to the image size; the documented rule for masks a few pixels off.

    A mask whose size differs from its image by at most ``MAX_SIZE_SLACK`` pixels per axis
    (RRSIS-D and some Dubai exports are one pixel off) is aligned at the top-left corner:
    extra rows/columns are dropped and missing ones are filled with ``fill`` (unlabeled).
    Larger differences mean the mask belongs to another image and are an error.
    """
    h, w = arr.shape[:2]
    if (h, w) == (height, width):
        return arr, False
    out = np.full((height, width) + arr.shape[2:], fill, dtype=arr.dtype)
    hh, ww = min(h, height), min(w, width)
    out[:hh, :ww] = arr[:hh, :ww]
    return out, True


MAX_SIZE_SLACK = 2
