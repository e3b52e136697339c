"""A compact multi-scale convolutional vision backbone in plain torch.

Small enough to train from scratch on a CPU and to run a 512² tile in well under
150 ms on two threads, yet multi-scale (strides 4, 8, 16, 32) so the mask decoder
can fuse coarse context with fine detail, like the hierarchical encoders of the
reference systems.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv + BatchNorm (+ ReLU): the unit every block is built from."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Two 3×3 convolutions with an identity shortcut."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(ch, ch), conv_bn(ch, ch, act=False))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ConvBackbone(nn.Module):
    """Four-stage residual CNN returning features at strides 4, 8, 16 and 32.

    Args:
        channels: output channels of the four stages.
        depths: residual blocks per stage.
        in_chans: input bands (3 for display RGB).
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 192), depths: Sequence[int] = (1, 2, 2, 1),
                 in_chans: int = 3) -> None:
        super().__init__()
        c1 = channels[0]
        self.stem = nn.Sequential(conv_bn(in_chans, c1 // 2, stride=2), conv_bn(c1 // 2, c1, stride=2))
        stages = []
        cin = c1
        for i, (c, d) in enumerate(zip(channels, depths)):
            down = nn.Identity() if i == 0 else conv_bn(cin, c, stride=2)
            stages.append(nn.Sequential(down, *[ResBlock(c) for _ in range(d)]))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(channels)
        self.strides = (4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``B×C×H×W`` (H, W multiples of 32) → features at strides 4, 8, 16, 32."""
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class FPN(nn.Module):
    """Feature pyramid: lateral 1×1 projections merged top-down to a common width."""

    def __init__(self, in_channels: Sequence[int], dim: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, dim, 1) for c in in_channels])
        self.smooth = nn.ModuleList([conv_bn(dim, dim) for _ in in_channels])

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [None] * len(feats)  # type: ignore[list-item]
        x = self.lateral[-1](feats[-1])
        out[-1] = self.smooth[-1](x)
        for i in range(len(feats) - 2, -1, -1):
            x = self.lateral[i](feats[i]) + nn.functional.interpolate(x, size=feats[i].shape[-2:], mode="nearest")
            out[i] = self.smooth[i](x)
        return out
