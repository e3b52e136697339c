"""Shapes and behaviour of the network modules (random weights, no data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.models import TASK_IDS, TATE, ClassWiseMemory, ConvBackbone, LatentKnowledgeMemory, UniGeoSeg
from geoseg.models.decoder import render_prompt_map


def _inputs(b: int = 2, size: int = 64, task: str = "referring"):
    torch.manual_seed(0)
    return dict(
        image=torch.randn(b, 3, size, size),
        tokens=torch.randn(b, 7, 384),
        token_mask=torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:b],
        task=torch.full((b,), TASK_IDS[task]),
        points=torch.rand(b, 3, 2),
        point_labels=torch.tensor([[1, 0, -1], [1, -1, -1]])[:b],
        box=torch.tensor([[0.1, 0.2, 0.6, 0.7], [0.0, 0.0, 0.5, 0.5]])[:b],
        box_valid=torch.tensor([True, False])[:b],
    )


def _small(**kw) -> UniGeoSeg:
    return UniGeoSeg(channels=(8, 16, 24, 32), depths=(1, 1, 1, 1), fpn_dim=16, query_dim=32, **kw)


def test_backbone_strides():
    feats = ConvBackbone((8, 16, 24, 32), (1, 1, 1, 1))(torch.randn(1, 3, 96, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(24, 16), (12, 8), (6, 4), (3, 2)]
    assert [f.shape[1] for f in feats] == [8, 16, 24, 32]


def test_unigeoseg_output_shapes():
    m = _small().eval()
    with torch.no_grad():
        out = m(**_inputs(2, 64))
    assert out["logits"].shape == (2, 1, 16, 16)
    assert out["presence"].shape == (2,)
    assert out["similarity"].shape == (2, 1, 8, 8)
    assert torch.isfinite(out["logits"]).all()


def _tate_query(tate: TATE, task: str, **over) -> torch.Tensor:
    x = _inputs(2, task=task)
    x.update(over)
    return tate(x["tokens"], x["token_mask"], x["task"], x["points"], x["point_labels"], x["box"], x["box_valid"])


@pytest.mark.parametrize("task, own", [("interactive", "inter_fuse"), ("referring", "ref_query"),
                                       ("reasoning", "reason_query")])
def test_each_tate_path_uses_its_own_parameters(task, own):
    torch.manual_seed(1)
    tate = TATE(384, 32)
    q = _tate_query(tate, task)
    # a fixed random projection, not q.sum(): the reasoning path ends in a LayerNorm, whose outputs
    # always sum to the same value, so a plain sum would send (up to rounding) no gradient back
    (q * torch.randn(q.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    with_grad = {n.split(".")[0] for n, p in tate.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    paths = {"inter_fuse", "ref_query", "reason_query"}
    assert own in with_grad
    assert not (paths - {own}) & with_grad


def test_interactive_query_reads_coordinates_and_text_queries_ignore_them():
    tate = TATE(384, 32).eval()
    moved = {"points": torch.rand(2, 3, 2) * 0.5, "box": torch.tensor([[0.5, 0.5, 0.9, 0.9]] * 2)}
    with torch.no_grad():
        a, b = _tate_query(tate, "interactive"), _tate_query(tate, "interactive", **moved)
        r1, r2 = _tate_query(tate, "referring"), _tate_query(tate, "referring", **moved)
    assert not torch.allclose(a, b)
    assert torch.allclose(r1, r2)


def test_referring_pool_ignores_padding_tokens():
    tate = TATE(384, 32).eval()
    x = _inputs(2)
    garbage = x["tokens"].clone()
    garbage[1, 4:] = 100.0  # padded positions of row 1
    with torch.no_grad():
        a = _tate_query(tate, "referring")
        b = _tate_query(tate, "referring", tokens=garbage)
    assert torch.allclose(a[1], b[1], atol=1e-5)


def test_tate_ablation_pools_every_task_the_same_way():
    tate = TATE(384, 32, enabled=False).eval()
    with torch.no_grad():
        qs = [_tate_query(tate, t) for t in TASK_IDS]
    assert torch.allclose(qs[0], qs[1]) and torch.allclose(qs[1], qs[2])


def test_latent_memory_lambda_zero_for_interactive():
    mem = LatentKnowledgeMemory(32, 4, (0.0, 0.2, 0.2))
    q = torch.randn(3, 32)
    out = mem(q, torch.tensor([0, 1, 2]))
    assert torch.equal(out[0], q[0])
    assert not torch.allclose(out[1], q[1]) and not torch.allclose(out[2], q[2])
    _, att = mem.read(q)
    assert att.shape == (3, 4) and torch.allclose(att.sum(-1), torch.ones(3))


def test_memory_lambda_is_configurable():
    mem = LatentKnowledgeMemory(32, 4, (0.0, 0.0, 0.0))
    q = torch.randn(2, 32)
    assert torch.equal(mem(q, torch.tensor([1, 2])), q)


def test_class_wise_memory_attention_is_a_distribution_over_classes():
    cm = ClassWiseMemory(16, num_classes=5, slots=3)
    feat, att = cm(torch.randn(2, 16, 6, 7))
    assert feat.shape == (2, 16, 6, 7)
    assert att.shape == (2, 5, 6, 7)
    assert torch.allclose(att.sum(1), torch.ones(2, 6, 7), atol=1e-5)


def test_class_memory_in_decoder_gives_pre_and_post_memory_masks():
    m = _small(class_memory_classes=4).eval()
    with torch.no_grad():
        out = m(**_inputs(2, 64))
    assert out["aux_logits"].shape == (2, 1, 8, 8)
    assert out["class_attention"].shape == (2, 4, 8, 8)
    assert out["logits"].shape == (2, 1, 16, 16)


def test_prompt_map_marks_points_and_box():
    pts = torch.tensor([[[4.5 / 16, 4.5 / 16], [12.5 / 16, 12.5 / 16]]])  # cell centres
    pm = render_prompt_map(pts, torch.tensor([[1, 0]]), torch.tensor([[0.5, 0.0, 1.0, 0.5]]), torch.tensor([True]), 16, 16)
    pos, neg, box = pm[0]
    assert pos[4, 4] > 0.9 and pos[12, 12] < 0.01
    assert neg[12, 12] > 0.9 and neg[4, 4] < 0.01
    assert box[3, 12] > 0.9 and box[12, 3] < 0.1
    no_box = render_prompt_map(pts, torch.tensor([[1, 0]]), torch.zeros(1, 4), torch.tensor([False]), 16, 16)
    assert no_box[0, 2].abs().max() == 0


def test_semantic_head_is_a_training_only_output():
    m = _small(semantic_classes=5)
    x = _inputs()
    m.train()
    assert m(**x)["semantic_logits"].shape[1] == 5
    m.eval()
    with torch.no_grad():
        assert "semantic_logits" not in m(**x)


def test_spatial_prior_starts_at_zero_and_can_point_at_a_corner():
    from geoseg.models.decoder import SpatialPrior

    prior = SpatialPrior(dim=8, grid=5)
    q = torch.randn(3, 8)
    assert torch.equal(prior(q, 16, 16), torch.zeros(3, 1, 16, 16))
    with torch.no_grad():  # weight only the top-left bump (row 0, column 0 of the 5×5 grid)
        prior.mlp[-1].bias[0] = 4.0
    m = prior(q, 40, 40)[0, 0].detach()
    assert m.shape == (40, 40)
    y, x = divmod(int(m.argmax()), 40)
    assert y < 8 and x < 8 and float(m[-1, -1]) < 0.01 * float(m.max())


def test_spatial_prior_acts_on_the_mask_logits():
    torch.manual_seed(3)
    plain = _small().eval()
    torch.manual_seed(3)
    with_prior = _small(spatial_prior=True).eval()
    with_prior.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        a, b = plain(**_inputs()), with_prior(**_inputs())
        assert torch.allclose(a["logits"], b["logits"])  # zero-initialised: same network at the start
        with_prior.decoder.spatial_prior.mlp[-1].bias.fill_(1.0)
        c = with_prior(**_inputs())
    assert not torch.allclose(a["logits"], c["logits"])
    assert torch.allclose(a["similarity"], c["similarity"])  # the query and the features are untouched


def test_relation_anchor_marks_the_anchor_and_its_surroundings():
    from geoseg.models.decoder import RelationAnchor

    ra = RelationAnchor(dim=4, grow=(3, 7))
    ra.to_anchor = torch.nn.Identity()  # the query itself is the anchor query
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    feat = -q.view(1, 4, 1, 1).expand(1, 4, 12, 12).clone()
    feat[0, :, 5, 5] = q[0]  # the anchor: one cell whose feature matches the query
    extra, anchor = ra(q, feat)
    assert torch.equal(extra, torch.zeros(1, 4, 12, 12))  # zero-initialised mix: no effect yet
    assert anchor[0, 0, 5, 5] > 0.99 and anchor[0, 0].sum() < 1.01
    with torch.no_grad():
        ra.mix.weight.zero_()
        ra.mix.weight[0, 1] = 1.0  # channel 0 <- the map grown by one cell
        ra.mix.weight[1, 2] = 1.0  # channel 1 <- the map grown by three cells
        extra, _ = ra(q, feat)
    near, far = extra[0, 0] > 0.99, extra[0, 1] > 0.99
    assert near.sum() == 9 and near[4:7, 4:7].all()
    assert far.sum() == 49 and far[2:9, 2:9].all()


def test_relation_anchor_starts_as_the_plain_network():
    torch.manual_seed(4)
    plain = _small().eval()
    torch.manual_seed(4)
    with_anchor = _small(relation_anchor=True).eval()
    missing, unexpected = with_anchor.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("decoder.anchor.") for k in missing)
    with torch.no_grad():
        a, b = plain(**_inputs()), with_anchor(**_inputs())
    assert torch.allclose(a["logits"], b["logits"]) and b["anchor"].shape[1] == 1


def test_image_tensor_takes_read_only_arrays_without_a_warning():
    import warnings

    from geoseg.device import image_tensor

    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    image.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on a non-writable array it would share
        x = image_tensor(image, torch.device("cpu"))
    assert x.shape == (1, 3, 2, 3) and x.dtype == torch.float32
    assert torch.equal(x[0].permute(1, 2, 0), torch.from_numpy(image.copy()).float())
