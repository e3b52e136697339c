"""The ``sam`` backend: official-format checkpoints with random weights, loaded from disk and run on Dubai.

No SAM weights exist on these machines, so every network here is built with the
``segment-anything`` package's own builders/classes from a fixed seed, its state dict is
saved exactly as the official ``sam_vit_*.pth`` files are (a flat ``torch.save``'d state
dict), and the backend loads it from the path. The masks of random weights mean nothing;
what is checked is the plumbing: architecture read from the weights, weights equal to the
saved ones, prompt coordinates mapped into the network's frame, output shapes and dtypes,
agreement with the package's own end-to-end ``Sam.forward``, and one-line errors.

ViT-B is built and loaded once (its forward pass at 1024 px is too slow for a 2-core CI);
the forward checks use a reduced ViT built with the package's ``ImageEncoderViT`` /
``PromptEncoder`` / ``MaskDecoder`` classes (dim 64, depth 2, 256-px input).
"""

from __future__ import annotations

import sys
from functools import partial

import cv2
import numpy as np
import pytest
import torch

from geoseg.errors import GeosegError, InputError, MissingExtraError
from geoseg.prompts import Prompt
from geoseg.segmenters import build_segmenter
from geoseg.segmenters.sam import SamSegmenter, import_segment_anything, infer_sam_arch
from geoseg.unified.segmenter import default_checkpoint_path


@pytest.fixture(scope="module")
def dubai_crop(dubai_dir) -> np.ndarray:
    """A non-square 300 x 420 crop of a held-out Dubai image (RGB uint8)."""
    bgr = cv2.imread(str(dubai_dir / "tile_7" / "images" / "image_part_001.jpg"))
    return np.ascontiguousarray(bgr[100:400, 50:470, ::-1])


def _small_sam():
    _, modeling = import_segment_anything()
    torch.manual_seed(0)
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            depth=2, embed_dim=64, img_size=256, mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2, patch_size=16, qkv_bias=True, use_rel_pos=True, rel_pos_zero_init=False,
            global_attn_indexes=(1,), window_size=4, out_chans=64),
        prompt_encoder=modeling.PromptEncoder(embed_dim=64, image_embedding_size=(16, 16), input_image_size=(256, 256),
                                              mask_in_chans=16),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=64, mlp_dim=256, num_heads=8),
            transformer_dim=64, iou_head_depth=3, iou_head_hidden_dim=64),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    model = _small_sam()
    path = tmp_path_factory.mktemp("sam") / "sam_small.pth"
    torch.save(model.state_dict(), path)  # the official layout: a flat state dict
    return path, model


def test_vit_b_checkpoint_is_recognised_and_loaded_exactly(tmp_path):
    build_sam, _ = import_segment_anything()
    torch.manual_seed(1)
    ref = build_sam.sam_model_registry["vit_b"]()
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(ref.state_dict(), path)
    seg = build_segmenter("sam", checkpoint=str(path), device="cpu")
    assert isinstance(seg, SamSegmenter)
    assert seg.arch.published_type == "vit_b" and seg.arch.img_size == 1024
    assert seg.provenance()["arch"] == "sam vit_b" and seg.provenance()["checkpoint"] == path.name
    loaded = seg.model.state_dict()
    assert loaded.keys() == ref.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in ref.state_dict().items())
    with pytest.raises(GeosegError, match="not vit_l"):
        SamSegmenter(checkpoint=path, model_type="vit_l", device="cpu")


def test_reduced_sam_box_and_point_on_dubai(small_ckpt, dubai_crop):
    path, ref = small_ckpt
    seg = SamSegmenter(checkpoint=path, device="cpu")
    arch = seg.arch
    assert (arch.embed_dim, arch.depth, arch.num_heads, arch.global_attn_indexes, arch.window_size, arch.img_size) == \
        (64, 2, 2, (1,), 4, 256)
    assert arch.published_type is None and arch.num_multimask_outputs == 3 and arch.decoder_mlp_dim == 256
    assert all(torch.equal(seg.model.state_dict()[k], v) for k, v in ref.state_dict().items())

    seen = []
    hook = seg.model.prompt_encoder.register_forward_hook(lambda m, args, kw, out: seen.append(kw), with_kwargs=True)
    seg.set_image(dubai_crop)  # 300 x 420: longest side -> 256, so 183 x 256 (scale 256/420)
    assert seg._input_hw == (183, 256)
    box = (100.0, 60.0, 260.0, 200.0)
    pb = seg.predict(Prompt(box=box))
    pp = seg.predict(Prompt(points=((210.0, 150.0),), labels=(1,)))
    hook.remove()
    for p in (pb, pp):
        assert p.mask.shape == (300, 420) and p.mask.dtype == bool
        assert p.prob.shape == (300, 420) and p.prob.dtype == np.float32
        assert 0.0 <= p.prob.min() and p.prob.max() <= 1.0 and 0.0 <= p.score <= 1.0
        assert np.array_equal(p.mask, p.prob > 0.5)
    sx, sy = 256 / 420, 183 / 300  # per-axis scale of the resized frame; SAM adds the 0.5 back itself
    got_box = seen[0]["boxes"][0].numpy()
    assert np.allclose(got_box, [100 * sx - 0.5, 60 * sy - 0.5, 260 * sx - 0.5, 200 * sy - 0.5], atol=1e-4)
    got_pt, got_lab = seen[1]["points"]
    assert np.allclose(got_pt[0, 0].numpy(), [210 * sx - 0.5, 150 * sy - 0.5], atol=1e-4) and got_lab.tolist() == [[1]]
    assert pb.info["multimask"] is False and pp.info["multimask"] is True

    # the same answer as the package's own end-to-end forward on the same resized input
    x = torch.from_numpy(dubai_crop).permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(x, size=(183, 256), mode="bilinear", align_corners=False, antialias=True)
    with torch.inference_mode():
        out = ref([{"image": x[0].round().clamp(0, 255), "original_size": (300, 420),
                    "boxes": seen[0]["boxes"]}], multimask_output=False)
    assert np.array_equal(out[0]["masks"][0, 0].numpy(), pb.mask)
    assert pb.score == pytest.approx(min(max(float(out[0]["iou_predictions"][0, 0]), 0.0), 1.0), abs=1e-5)


def test_inferred_arch_matches_the_registry_sizes():
    build_sam, _ = import_segment_anything()
    for name in ("vit_b", "vit_l", "vit_h"):
        with torch.device("meta"):  # shapes only: no memory, no time
            sd = build_sam.sam_model_registry[name]().state_dict()
        assert infer_sam_arch(sd).published_type == name


def test_missing_wrong_and_broken_checkpoints(tmp_path, small_ckpt, monkeypatch):
    with pytest.raises(InputError, match="does not exist"):
        SamSegmenter(checkpoint=tmp_path / "nope.pth", device="cpu")
    monkeypatch.delenv("GEOSEG_SAM_CHECKPOINT", raising=False)
    with pytest.raises(GeosegError, match="needs SAM weights"):
        build_segmenter("sam", device="cpu")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read SAM checkpoint"):
        SamSegmenter(checkpoint=junk, device="cpu")
    sam2_like = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7)}}, sam2_like)
    with pytest.raises(GeosegError, match="SAM 2 checkpoint.*--backend sam2"):
        SamSegmenter(checkpoint=sam2_like, device="cpu")
    with pytest.raises(GeosegError, match="unified-model checkpoint.*--backend unified"):
        SamSegmenter(checkpoint=default_checkpoint_path(), device="cpu")
    path, ref = small_ckpt
    sd = dict(ref.state_dict())
    sd.pop("mask_decoder.iou_token.weight")
    broken = tmp_path / "broken.pth"
    torch.save(sd, broken)
    with pytest.raises(GeosegError, match="does not fit the SAM"):
        SamSegmenter(checkpoint=broken, device="cpu")
    monkeypatch.setenv("GEOSEG_SAM_CHECKPOINT", str(path))
    assert isinstance(build_segmenter("sam", device="cpu"), SamSegmenter)


def test_missing_package_names_the_extra(monkeypatch, tmp_path, small_ckpt):
    import importlib.util

    for mod in [m for m in sys.modules if m == "segment_anything" or m.startswith("segment_anything.")]:
        monkeypatch.delitem(sys.modules, mod)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "segment_anything" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"geoseg\[sam\]"):
        SamSegmenter(checkpoint=small_ckpt[0], device="cpu")


def test_trainfree_route_runs_on_sam_weights(small_ckpt, dubai_crop, tmp_path, monkeypatch):
    """``--backend trainfree --checkpoint sam.pth``: the file's kind picks SAM, with GeoSeg's both routes."""
    from geoseg.trainfree.client import Grounding

    class Fixed:
        model = backend_key = "fixed"

        def ground(self, image, instruction):
            return Grounding(box=(100.0, 60.0, 260.0, 200.0), points=[], label="building", raw="", family="generic")

    monkeypatch.setenv("GEOSEG_HOME", str(tmp_path))  # no stored calibration profile: the fixed rule
    seg = build_segmenter("trainfree", checkpoint=str(small_ckpt[0]), grounder=Fixed(), device="cpu")
    assert seg.session.segmenter.name == "sam" and seg.config.routes == "both"
    assert seg.config.min_crop == 0 and seg.similarity.name == "unified"
    seg.set_image(dubai_crop)
    pred = seg.predict(Prompt(text="the building"))
    c0, r0, c1, r1 = pred.info["window"]
    assert pred.mask.shape == (300, 420) and pred.info["refinement"] == "fixed"
    assert pred.info["refined_box"] == pytest.approx([68.0, 32.0, 276.0, 214.0])  # 20 % / 10 % out
    assert (c0, r0, c1, r1) == (47, 13, 297, 233)  # the refined box + 10 % margin, no crop floor for SAM
    outside = np.ones((300, 420), bool)
    outside[r0:r1, c0:c1] = False
    assert not pred.mask[outside].any() and len(pred.info["points"]) >= 1
    assert seg.provenance()["mask_backend"]["arch"].startswith("sam custom ViT")


@pytest.mark.parametrize("wrap", ["model", "state_dict", "module_prefix", "ddp_in_model"])
def test_fine_tuning_wrappers_load_the_same_weights(tmp_path, small_ckpt, wrap):
    """Fine-tuning code saves the SAM network inside a training record or under DDP's ``module.`` prefix."""
    _, ref = small_ckpt
    sd = ref.state_dict()
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    payload = {"model": {"model": sd, "epoch": 3, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}},
               "state_dict": {"state_dict": sd, "epoch": 3},
               "module_prefix": prefixed,
               "ddp_in_model": {"model": prefixed, "epoch": 3}}[wrap]
    path = tmp_path / f"finetuned_{wrap}.pth"
    torch.save(payload, path)
    seg = SamSegmenter(checkpoint=path, device="cpu")
    assert seg.arch == infer_sam_arch(sd)
    assert all(torch.equal(seg.model.state_dict()[k], v) for k, v in sd.items())


def test_cut_short_checkpoint_says_so(tmp_path, small_ckpt):
    """An interrupted download (zip archive or legacy pickle, or nothing at all) is named as such."""
    path, ref = small_ckpt
    legacy = tmp_path / "legacy.pth"
    torch.save(ref.state_dict(), legacy, _use_new_zipfile_serialization=False)
    for name, src in (("zip.pth", path), ("legacy_cut.pth", legacy)):
        data = src.read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    for name in ("zip.pth", "legacy_cut.pth", "empty.pth"):
        with pytest.raises(InputError, match=r"is cut short \([\d,]+ bytes; an interrupted download") as err:
            SamSegmenter(checkpoint=tmp_path / name, device="cpu")
        assert "\n" not in str(err.value)
