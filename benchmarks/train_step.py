"""What one training step of the unified model costs on this machine, by architecture and prompts per image.

Why: on a 2-core CPU the image encoder is most of a training step, so decoding several prompts per
image pass (``train.prompts_per_image``) buys more supervised prompts for the same time, or a wider
network for the same step time. This prints the measured step (forward with every loss the recipe
uses, backward, gradient clipping, AdamW) on a synthetic batch shaped like :func:`collate`'s output,
so recipes can be sized in steps before a long run.

Usage: ``python benchmarks/train_step.py [--config configs/unigeoseg_cw.yaml ...] [--prompts 1 4]
[--batch 16] [--repeats 5] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from geoseg.unified.build import build_model
from geoseg.unified.config import load_config
from geoseg.unified.train import compute_losses, forward_batch


def synthetic_batch(batch: int, k: int, size: int, classes: int, tokens: int = 20, seed: int = 0
                    ) -> dict[str, torch.Tensor]:
    """A random batch with :func:`geoseg.unified.data.collate`'s keys: ``batch // k`` tiles, ``k`` rows each."""
    g = torch.Generator().manual_seed(seed)
    n = batch // k
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.rand(batch, 2, generator=g) * size
    radius = (0.05 + 0.2 * torch.rand(batch, generator=g)) * size
    target = ((xx - centres[:, 0, None, None]) ** 2 + (yy - centres[:, 1, None, None]) ** 2
              < radius[:, None, None] ** 2).float().unsqueeze(1)
    return {
        "image": torch.randn(n, 3, size, size, generator=g),
        "image_of": torch.arange(n).repeat_interleave(k),
        "tokens": torch.randn(batch, tokens, 384, generator=g),
        "token_mask": torch.ones(batch, tokens, dtype=torch.bool),
        "task": torch.arange(batch) % 3,
        "points": (centres / size).unsqueeze(1).repeat(1, 3, 1),
        "point_labels": torch.tensor([1, -1, -1]).repeat(batch, 1),
        "box": torch.cat([(centres - radius[:, None]) / size, (centres + radius[:, None]) / size], 1).clamp(0, 1),
        "box_valid": torch.arange(batch) % 2 == 0,
        "target": target,
        "empty": torch.zeros(batch, dtype=torch.bool),
        "category": torch.randint(0, classes, (batch,), generator=g),
    }


def step_seconds(config: str, k: int, batch: int, repeats: int) -> tuple[float, float]:
    """Median seconds of a full training step and of the image encoder's share (forward + backward)."""
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = synthetic_batch(batch, k, cfg.model.input_size, len(cfg.model.classes))

    def step() -> None:
        losses = compute_losses(forward_batch(model, data), data, cfg.train)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def encoder() -> None:
        sum(f.mean() for f in model.encode_image(data["image"])).backward()

    times = {}
    for name, fn in (("step", step), ("encoder", encoder)):
        fn()  # warm-up
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        times[name] = sorted(ts)[len(ts) // 2]
    return times["step"], times["encoder"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", default=["configs/unigeoseg_cw.yaml", "configs/unigeoseg_cw_small.yaml"])
    ap.add_argument("--prompts", nargs="+", type=int, default=[1, 4], help="prompts per image pass to time")
    ap.add_argument("--batch", type=int, default=16, help="rows per step")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} rows")
    print(f"{'config':<36} {'arch':<16} {'prompts/image':>13} {'s/step':>7} {'rows/s':>7} {'encoder share':>13}")
    for config in args.config:
        arch = load_config(config).model.arch
        for k in args.prompts:
            if args.batch % k:
                print(f"{config:<36} {arch:<16} {k:>13}  (does not divide the batch: skipped)")
                continue
            s, enc = step_seconds(config, k, args.batch, args.repeats)
            print(f"{config:<36} {arch:<16} {k:>13} {s:>7.2f} {args.batch / s:>7.1f} {enc / s:>12.0%}")


if __name__ == "__main__":
    main()
