"""Automatic mask filtering with a counted reason for every rejection.

The checks run in a fixed order and an instance is charged to the first one it fails,
so the counts add up to the number of rejected instances.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from geoseg.data.attributes import Attributes
from geoseg.data.instances import TileInstances
from geoseg.data.sources.base import UNLABELED

REASONS = ("tile_mostly_unlabeled", "too_few_pixels", "area_below_min", "area_above_max", "truncated", "thin",
           "fragmented")


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds (UniGeoSeg keeps components covering 0.5 %-70 % of the tile).

    Attributes:
        min_area_frac / max_area_frac: kept share of the tile.
        min_pixels: absolute floor, for small tiles.
        max_border_fraction: reject when more than this share of the boundary lies on the tile edge.
        min_thickness: reject shapes thinner than this many pixels (twice the largest inner distance).
        max_irregularity: reject when ``perimeter^2 / (4 pi area)`` exceeds this (fragmented, sprawling).
        max_unlabeled_frac: reject the whole tile when more than this share is unlabeled.
    """

    min_area_frac: float = 0.005
    max_area_frac: float = 0.70
    min_pixels: int = 64
    max_border_fraction: float = 0.5
    min_thickness: float = 4.0
    max_irregularity: float = 40.0
    max_unlabeled_frac: float = 0.5

    @classmethod
    def from_dict(cls, d: dict | None) -> FilterConfig:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            from geoseg.errors import InputError

            raise InputError(f"unknown filter settings {sorted(unknown)}", f"use {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def unlabeled_fraction(inst: TileInstances) -> float:
    if inst.label is None:
        return 0.0
    return float(np.count_nonzero(inst.label == UNLABELED)) / inst.label.size


def apply(inst: TileInstances, att: Attributes, cfg: FilterConfig, counts: Counter) -> np.ndarray:
    """Boolean keep-flag per instance; rejection reasons are added to ``counts``."""
    n = len(inst)
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return keep
    if unlabeled_fraction(inst) > cfg.max_unlabeled_frac:
        counts["tile_mostly_unlabeled"] += n
        return np.zeros(n, dtype=bool)
    checks = [
        ("too_few_pixels", inst.area < cfg.min_pixels),
        ("area_below_min", att.area_frac < cfg.min_area_frac),
        ("area_above_max", att.area_frac > cfg.max_area_frac),
        ("truncated", att.border_fraction > cfg.max_border_fraction),
        ("thin", att.thickness < cfg.min_thickness),
        ("fragmented", att.irregularity > cfg.max_irregularity),
    ]
    for reason, bad in checks:
        hit = keep & bad
        c = int(np.count_nonzero(hit))
        if c:
            counts[reason] += c
            keep &= ~bad
    return keep
