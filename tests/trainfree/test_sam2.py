"""The ``sam2`` backend: official-format SAM 2 checkpoints with random weights, loaded and run on Dubai.

The network is built by the ``sam2`` package's own builder from its shipped
``sam2_hiera_t`` config (the smallest published model, 39 M parameters) with a fixed
seed and saved as the official files are (``{"model": state_dict}``); the backend reads
the config back from the weights. Forward checks run the real tiny architecture at a
256-px input (``image_size`` override: the same weights, 16x fewer pixels than the
published 1024) to stay fast on a 2-core CI. Random weights make the masks meaningless:
the checks are on the plumbing — config inference, weights equal to the saved ones,
prompt coordinates in the model's frame, shapes, dtypes and one-line errors.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch

from geoseg.errors import GeosegError, InputError, MissingExtraError
from geoseg.prompts import Prompt
from geoseg.segmenters import build_segmenter
from geoseg.segmenters.sam2 import Sam2Segmenter, import_sam2, infer_sam2_config


@pytest.fixture(scope="module")
def dubai_crop(dubai_dir) -> np.ndarray:
    """A non-square 300 x 420 crop of a held-out Dubai image (RGB uint8)."""
    bgr = cv2.imread(str(dubai_dir / "tile_7" / "images" / "image_part_002.jpg"))
    return np.ascontiguousarray(bgr[200:500, 0:420, ::-1])


def _build(config: str):
    torch.manual_seed(0)
    return import_sam2().build_sam2(config, None, device="cpu")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    model = _build("configs/sam2/sam2_hiera_t.yaml")
    path = tmp_path_factory.mktemp("sam2") / "sam2_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)  # the official layout
    return path, model


def test_tiny_checkpoint_box_and_point_on_dubai(tiny_ckpt, dubai_crop):
    path, ref = tiny_ckpt
    seg = build_segmenter("sam2", checkpoint=str(path), device="cpu", image_size=256)
    assert isinstance(seg, Sam2Segmenter)
    assert seg.config == "configs/sam2/sam2_hiera_t.yaml" and seg.model.image_size == 256
    assert seg.provenance()["arch"] == "sam2_hiera_t" and seg.provenance()["checkpoint"] == path.name
    loaded = seg.model.state_dict()
    assert loaded.keys() == ref.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in ref.state_dict().items())

    seen = []
    hook = seg.model.sam_prompt_encoder.register_forward_hook(lambda m, a, kw, out: seen.append(kw), with_kwargs=True)
    seg.set_image(dubai_crop)
    assert seg._features["image_embed"].shape == (1, 256, 16, 16)
    assert [tuple(f.shape[-2:]) for f in seg._features["high_res_feats"]] == [(64, 64), (32, 32)]
    pb = seg.predict(Prompt(box=(100.0, 60.0, 260.0, 200.0)))
    pp = seg.predict(Prompt(points=((210.0, 150.0), (50.0, 40.0)), labels=(1, 0)))
    hook.remove()
    for p in (pb, pp):
        assert p.mask.shape == (300, 420) and p.mask.dtype == bool
        assert p.prob.shape == (300, 420) and p.prob.dtype == np.float32
        assert 0.0 <= p.score <= 1.0 and np.array_equal(p.mask, p.prob > 0.5)
    sx, sy = 256 / 420, 256 / 300  # SAM 2 squashes the image into its square input
    coords, labels = seen[0]["points"]
    assert np.allclose(coords[0].numpy(), [[100 * sx - 0.5, 60 * sy - 0.5], [260 * sx - 0.5, 200 * sy - 0.5]], atol=1e-4)
    assert labels.tolist() == [[2, 3]] and seen[0]["boxes"] is None
    coords, labels = seen[1]["points"]
    assert np.allclose(coords[0].numpy(), [[210 * sx - 0.5, 150 * sy - 0.5], [50 * sx - 0.5, 40 * sy - 0.5]], atol=1e-4)
    assert labels.tolist() == [[1, 0]]


def test_sam2_1_config_is_read_from_the_weights():
    sd = _build("configs/sam2.1/sam2.1_hiera_t.yaml").state_dict()
    assert infer_sam2_config(sd) == "configs/sam2.1/sam2.1_hiera_t.yaml"
    sd = {k: v for k, v in sd.items() if not k.startswith("image_encoder.trunk.blocks.11.")}
    with pytest.raises(GeosegError, match="11 blocks is not a published size"):
        infer_sam2_config(sd)


def test_missing_wrong_and_broken_checkpoints(tmp_path, tiny_ckpt, monkeypatch):
    path, ref = tiny_ckpt
    with pytest.raises(InputError, match="does not exist"):
        Sam2Segmenter(checkpoint=tmp_path / "nope.pt", device="cpu")
    monkeypatch.delenv("GEOSEG_SAM2_CHECKPOINT", raising=False)
    with pytest.raises(GeosegError, match="needs SAM 2 weights"):
        Sam2Segmenter(device="cpu")
    sam1 = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16),
                "mask_decoder.iou_token.weight": torch.zeros(1, 8)}, sam1)
    with pytest.raises(GeosegError, match="is a SAM checkpoint.*--backend sam"):
        Sam2Segmenter(checkpoint=sam1, device="cpu")
    with pytest.raises(GeosegError, match="does not fit SAM 2 config"):
        Sam2Segmenter(checkpoint=path, config="configs/sam2/sam2_hiera_s.yaml", device="cpu", image_size=256)
    with pytest.raises(GeosegError, match="cannot build SAM 2 from config"):
        Sam2Segmenter(checkpoint=path, config="configs/sam2/no_such.yaml", device="cpu")
    monkeypatch.setitem(sys.modules, "sam2", None)
    with pytest.raises(MissingExtraError, match=r"geoseg\[sam2\].*--no-deps"):
        Sam2Segmenter(checkpoint=path, device="cpu")


def test_trainfree_picks_sam2_from_the_file(tiny_ckpt):
    from geoseg.trainfree.segmenter import build_mask_backend

    seg = build_mask_backend(None, tiny_ckpt[0], device="cpu")
    assert isinstance(seg, Sam2Segmenter) and seg.config == "configs/sam2/sam2_hiera_t.yaml"


@pytest.mark.parametrize("wrap", ["flat", "training_record"])
def test_bare_and_training_state_dicts_load(tmp_path, tiny_ckpt, wrap):
    """A fine-tuned SAM 2 saved as ``model.state_dict()`` or inside a DDP training record is still SAM 2."""
    _, ref = tiny_ckpt
    sd = ref.state_dict()
    payload = sd if wrap == "flat" else {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 5,
                                         "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]}}
    path = tmp_path / f"sam2_{wrap}.pt"
    torch.save(payload, path)
    seg = Sam2Segmenter(checkpoint=path, device="cpu", image_size=256)
    assert seg.config == "configs/sam2/sam2_hiera_t.yaml"
    assert all(torch.equal(seg.model.state_dict()[k], v) for k, v in sd.items())
