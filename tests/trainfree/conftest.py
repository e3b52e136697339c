"""Fixtures of the training-free route: real Dubai targets and a loopback OpenAI-compatible server.

``openai_server`` (session server, reset before each test) knows ``dubai_targets``: the
three largest buildings (8-connected components of the palette mask) of Dubai
``tile_7/image_part_005`` plus its largest water body, with instructions such as
"the largest building". Use ``from tests.trainfree.openai_server import ...`` or the
fixtures ``openai_server_cls``/``target_cls`` to build a server of your own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))

from openai_server import OpenAIServer, Target  # noqa: E402

from geoseg.data.sources.dubai import PALETTE, palette_to_classes  # noqa: E402

BUILDING, WATER = 2, 1
_ORDINALS = ("largest", "second largest", "third largest", "fourth largest", "fifth largest", "sixth largest")


def component_boxes(label: np.ndarray, cls: int, k: int) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    """The ``k`` largest 8-connected components of class ``cls``: (mask, box) with box = pixel edges."""
    comps, n = ndimage.label(label == cls, structure=np.ones((3, 3), bool))
    if not n:
        return []
    sizes = np.bincount(comps.ravel())[1:]
    out = []
    for idx in np.argsort(sizes)[::-1][:k]:
        mask = comps == idx + 1
        ys, xs = np.nonzero(mask)
        out.append((mask, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))))
    return out


def load_dubai(dubai_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """RGB image and class map of ``tile_7/<name>``."""
    rgb = np.asarray(Image.open(dubai_dir / "tile_7" / "images" / f"{name}.jpg").convert("RGB"))
    with Image.open(dubai_dir / "tile_7" / "masks" / f"{name}.png") as im:
        label, _ = palette_to_classes(np.asarray(im.convert("RGB")), PALETTE, unknown="unlabeled")
    return rgb, label


def dubai_targets(dubai_dir: Path, name: str = "image_part_005", buildings: int = 3,
                  water: bool = True) -> list[Target]:
    """Real targets of one Dubai image (one shared image array, so the server matches them together)."""
    rgb, label = load_dubai(dubai_dir, name)
    targets = [Target(rgb, box, f"the {_ORDINALS[i]} building", "building")
               for i, (_, box) in enumerate(component_boxes(label, BUILDING, buildings))]
    if water:
        targets += [Target(rgb, box, "the largest water body", "water") for _, box in component_boxes(label, WATER, 1)]
    return targets


def dubai_crop_targets(dubai_dir: Path, names: tuple[str, ...] = ("image_part_001", "image_part_003", "image_part_005"),
                       per_image: int = 4, seed: int = 0) -> list[tuple[Target, np.ndarray]]:
    """Crops of varied size around the largest buildings, each its own image: ``(target, target mask)``.

    Each crop shows one of the ``per_image`` largest buildings with a seeded random margin
    (60-400 px per side), so images range from a few hundred to over a thousand pixels.
    """
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        rgb, label = load_dubai(dubai_dir, name)
        h, w = label.shape
        for mask, (x0, y0, x1, y1) in component_boxes(label, BUILDING, per_image):
            m = rng.integers(60, 400, 4)
            cx0, cy0 = max(0, int(x0) - m[0]), max(0, int(y0) - m[1])
            cx1, cy1 = min(w, int(x1) + m[2]), min(h, int(y1) + m[3])
            crop = np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1])
            cmask = mask[cy0:cy1, cx0:cx1]
            box = (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)
            out.append((Target(crop, box, "the building in the middle of the image", "building"), cmask))
    return out


@pytest.fixture(scope="session")
def dubai_crops(dubai_dir: Path) -> list[tuple[Target, np.ndarray]]:
    """12 real building targets, each in its own crop of Dubai tile_7 (images 001, 003, 005)."""
    return dubai_crop_targets(dubai_dir)


@pytest.fixture(scope="session")
def dubai_targets_005(dubai_dir: Path) -> list[Target]:
    return dubai_targets(dubai_dir)


@pytest.fixture(scope="session")
def _session_server(dubai_targets_005: list[Target]) -> Iterator[OpenAIServer]:
    with OpenAIServer(dubai_targets_005) as srv:
        yield srv


@pytest.fixture()
def openai_server(_session_server: OpenAIServer) -> OpenAIServer:
    """The loopback server knowing ``dubai_targets_005``, honest again for every test."""
    _session_server.reset()
    return _session_server


@pytest.fixture(scope="session")
def openai_server_cls() -> type[OpenAIServer]:
    return OpenAIServer


@pytest.fixture(scope="session")
def target_cls() -> type[Target]:
    return Target
