"""``geoseg bench run --model sam`` with the user's weights, then ``bench compare`` of two SAM runs.

No SAM weights exist on these machines: two reduced SAM networks (the ``segment-anything``
package's own classes, dim 32, 128-px input, seeded) are saved as the official files are — a
flat ``torch.save``'d state dict — and given through ``GEOSEG_SAM_CHECKPOINT``. Their masks
mean nothing; what is checked is what the reports say about the weights that answered.
"""

from __future__ import annotations

import importlib.util
import json
from functools import partial

import pytest
from click.testing import CliRunner

from geoseg.cli import cli


def _save_small_sam(path, seed: int) -> None:
    torch = pytest.importorskip("torch")
    from geoseg.segmenters.sam import import_segment_anything

    _, m = import_segment_anything()
    torch.manual_seed(seed)
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(depth=2, embed_dim=32, img_size=128, mlp_ratio=4, num_heads=2, patch_size=16,
                                        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True,
                                        use_rel_pos=True, global_attn_indexes=(1,), window_size=4, out_chans=32),
        prompt_encoder=m.PromptEncoder(embed_dim=32, image_embedding_size=(8, 8), input_image_size=(128, 128),
                                       mask_in_chans=16),
        mask_decoder=m.MaskDecoder(num_multimask_outputs=3, transformer_dim=32, iou_head_depth=3,
                                   iou_head_hidden_dim=32,
                                   transformer=m.TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=8)),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    torch.save(sam.state_dict(), path)


def test_sam_runs_name_their_weights_in_reports_and_comparisons(tmp_path, write_bench, monkeypatch):
    if importlib.util.find_spec("segment_anything") is None:  # its __init__ needs torchvision: not imported
        pytest.skip("the sam extra (segment-anything) is not installed")
    write_bench(tmp_path / "data", n_images=2)
    runs = []
    for name, seed in (("sam_a.pth", 0), ("sam_b.pth", 1)):
        _save_small_sam(tmp_path / name, seed)
        monkeypatch.setenv("GEOSEG_SAM_CHECKPOINT", str(tmp_path / name))
        out = tmp_path / "runs" / name.removesuffix(".pth")
        r = CliRunner().invoke(cli, ["-q", "bench", "run", "--model", "sam", "--device", "cpu",
                                     "--data", str(tmp_path / "data"), "-o", str(out)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert "task interactive" in r.output and "task referring" in r.output  # text samples: unsupported
        runs.append(out)
    arch = "sam custom ViT (dim 32, depth 2, 128 px)"
    assert f"- **weights**: sam_a.pth ({arch})" in (runs[0] / "report.md").read_text()
    assert f"<th>weights</th><td>sam_b.pth ({arch})</td>" in (runs[1] / "report.html").read_text()
    assert json.loads((runs[0] / "metrics.json").read_text())["run"]["provenance"]["backend_provenance"]["arch"] \
        == arch
    r = CliRunner().invoke(cli, ["bench", "compare", *map(str, runs)], catch_exceptions=False)
    assert r.exit_code == 0 and "| group | sam (sam_a) | sam (sam_b) |" in r.output


def test_checkpoint_option_and_resuming_with_other_weights(tmp_path, write_bench, monkeypatch):
    """bench run had no --checkpoint (only GEOSEG_SAM_CHECKPOINT), and a SAM run folder resumed with other
    weights silently mixed the old predictions with the new ones (its run.json recorded no weights)."""
    if importlib.util.find_spec("segment_anything") is None:
        pytest.skip("the sam extra (segment-anything) is not installed")
    monkeypatch.delenv("GEOSEG_SAM_CHECKPOINT", raising=False)
    write_bench(tmp_path / "data", n_images=1)
    for name, seed in (("a.pth", 0), ("b.pth", 1)):
        _save_small_sam(tmp_path / name, seed)
    out = tmp_path / "run"
    base = ["-q", "bench", "run", "--model", "sam", "--device", "cpu", "--data", str(tmp_path / "data"), "-o", str(out)]
    r = CliRunner().invoke(cli, [*base, "--checkpoint", str(tmp_path / "a.pth")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["weights"]["checkpoint"] == "a.pth"
    r = CliRunner().invoke(cli, [*base, "--checkpoint", str(tmp_path / "b.pth")])
    assert r.exit_code != 0 and "with other weights or thresholds (checkpoint differ)" in str(r.exception)
    r = CliRunner().invoke(cli, [*base, "--checkpoint", str(tmp_path / "b.pth"), "--overwrite"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["-q", "bench", "run", "--model", "classical", "--data", str(tmp_path / "data"),
                                 "-o", str(tmp_path / "c"), "--checkpoint", str(tmp_path / "a.pth")])
    assert r.exit_code != 0 and "the classical backend loads no weights" in str(r.exception)
    assert not (tmp_path / "c").exists()
