"""Predicates that single out one instance, and the uniqueness check behind every referring expression.

A predicate is a small JSON-friendly dict (``{"kind": "superlative", "attr": "area", "dir": "max"}``)
evaluated over the *visible* instances of the target's class in the tile (every component of
that class above ``distractor_min_frac`` of the tile, filtered or not: what a person sees).
An expression is kept only when the conjunction of its predicates holds for the target and
for no other visible instance. Superlatives carry a margin: an instance within the margin of
the extreme also satisfies them, so "the largest" is never used for near ties.
"""

from __future__ import annotations

import numpy as np

from geoseg.data.attributes import GRID_PHRASES, Attributes, orientation_word, shape_word, size_word
from geoseg.data.instances import TileInstances

#: margins that make a superlative perceptible
AREA_RATIO = 1.5
BRIGHTNESS_GAP = 25.0
POSITION_GAP = 0.12  # share of the tile side
NEAREST_RATIO = 1.3
MIN_CONTACT_PX = 6
SURROUND_SHARE = 0.75
ADJACENT_SHARE = 0.05  # class-level adjacency: share of the boundary touching the class

SUPERLATIVES = {
    ("area", "max"): "largest", ("area", "min"): "smallest",
    ("brightness", "max"): "brightest", ("brightness", "min"): "darkest",
    ("x", "min"): "leftmost", ("x", "max"): "rightmost",
    ("y", "min"): "topmost", ("y", "max"): "bottommost",
}
RELATIONS = {
    "adjacent": ["next to the {a}", "adjacent to the {a}", "touching the {a}", "bordering the {a}"],
    "left_of": ["to the left of the {a}", "left of the {a}", "on the left of the {a}"],
    "right_of": ["to the right of the {a}", "right of the {a}", "on the right of the {a}"],
    "above": ["above the {a}", "north of the {a}", "over the {a}"],
    "below": ["below the {a}", "south of the {a}", "under the {a}"],
    "nearest": ["closest to the {a}", "nearest to the {a}", "nearest the {a}"],
    "adjacent_class": ["next to {a}", "bordering {a}", "beside {a}", "along {a}"],
    "surrounded": ["surrounded by {a}", "enclosed by {a}", "ringed by {a}"],
}


def visible(inst: TileInstances, att: Attributes, cls: int, min_frac: float) -> np.ndarray:
    """Indices of the instances of class ``cls`` a person would count (area >= ``min_frac`` of the tile)."""
    return np.flatnonzero((inst.cls == cls) & (att.area_frac >= min_frac))


def _values(inst: TileInstances, att: Attributes, attr: str, idx: np.ndarray) -> tuple[np.ndarray, str]:
    h, w = inst.shape
    if attr == "area":
        return inst.area[idx].astype(np.float64), "ratio"
    if attr == "brightness":
        return att.brightness[idx], "gap"
    if attr == "x":
        return inst.centroid[idx, 0] / w, "pos"
    if attr == "y":
        return inst.centroid[idx, 1] / h, "pos"
    raise ValueError(f"unknown attribute {attr}")


def evaluate(pred: dict, inst: TileInstances, att: Attributes, idx: np.ndarray) -> np.ndarray:
    """Boolean per instance in ``idx``: does it satisfy ``pred``?"""
    kind = pred["kind"]
    if kind == "only":
        return np.ones(idx.size, dtype=bool)
    if kind == "superlative":
        vals, mode = _values(inst, att, pred["attr"], idx)
        best = vals.max() if pred["dir"] == "max" else vals.min()
        if mode == "ratio":
            return vals * AREA_RATIO >= best if pred["dir"] == "max" else vals <= best * AREA_RATIO
        gap = BRIGHTNESS_GAP if mode == "gap" else POSITION_GAP
        return vals >= best - gap if pred["dir"] == "max" else vals <= best + gap
    if kind == "grid":
        return att.grid[idx] == pred["cell"]
    if kind == "size":
        return np.array([size_word(float(a)) == pred["word"] for a in att.area_frac[idx]], dtype=bool)
    if kind == "shape":
        return np.array([shape_word(float(e), float(c)) == pred["word"]
                         for e, c in zip(att.elongation[idx], att.compactness[idx])], dtype=bool)
    if kind == "orientation":
        return np.array([orientation_word(float(d), float(e)) == pred["word"]
                         for d, e in zip(att.orientation[idx], att.elongation[idx])], dtype=bool)
    if kind == "relation":
        return _relation(pred, inst, att, idx)
    raise ValueError(f"unknown predicate kind {kind}")


def _relation(pred: dict, inst: TileInstances, att: Attributes, idx: np.ndarray) -> np.ndarray:
    rel = pred["rel"]
    if rel == "adjacent_class":
        c2 = int(pred["class"])
        touch = np.array([sum(c for j, c in att.neighbours[i].items() if inst.cls[j] == c2) for i in idx.tolist()])
        return touch >= np.maximum(MIN_CONTACT_PX, ADJACENT_SHARE * att.boundary_px[idx])
    if rel == "surrounded":
        c2 = int(pred["class"])
        out = np.zeros(idx.size, dtype=bool)
        for n, i in enumerate(idx.tolist()):
            if att.edge_px[i] > 0:
                continue
            touch = sum(c for j, c in att.neighbours[i].items() if inst.cls[j] == c2)
            out[n] = touch >= SURROUND_SHARE * att.boundary_px[i]
        return out
    a = int(pred["anchor"])
    if rel == "adjacent":
        return np.array([att.neighbours[i].get(a, 0) >= MIN_CONTACT_PX for i in idx.tolist()], dtype=bool)
    cx, cy = inst.centroid[idx, 0], inst.centroid[idx, 1]
    ax, ay, aw, ah = (float(v) for v in inst.bbox[a])
    if rel == "left_of":
        return cx < ax
    if rel == "right_of":
        return cx > ax + aw
    if rel == "above":
        return cy < ay
    if rel == "below":
        return cy > ay + ah
    if rel == "nearest":
        d = np.hypot(cx - inst.centroid[a, 0], cy - inst.centroid[a, 1])
        return d <= d.min() * NEAREST_RATIO + 1e-9
    raise ValueError(f"unknown relation {rel}")


def unique(preds: list[dict], inst: TileInstances, att: Attributes, idx: np.ndarray, target: int) -> bool:
    """True when ``target`` is the only instance of ``idx`` satisfying every predicate."""
    ok = np.ones(idx.size, dtype=bool)
    for p in preds:
        ok &= evaluate(p, inst, att, idx)
    hits = idx[ok]
    return hits.size == 1 and int(hits[0]) == target


def level_of(preds: list[dict]) -> int:
    """1 = category alone, 2 = attribute or position, 3 = relation to another object."""
    if any(p["kind"] == "relation" for p in preds):
        return 3
    if all(p["kind"] == "only" for p in preds):
        return 1
    return 2


def single_attribute_predicates(inst: TileInstances, att: Attributes, k: int) -> list[dict]:
    """Level-2 predicates the target satisfies (uniqueness still to be checked)."""
    out: list[dict] = [{"kind": "superlative", "attr": a, "dir": d} for a, d in SUPERLATIVES]
    out.append({"kind": "grid", "cell": int(att.grid[k])})
    out.append({"kind": "size", "word": size_word(float(att.area_frac[k]))})
    sw = shape_word(float(att.elongation[k]), float(att.compactness[k]))
    if sw:
        out.append({"kind": "shape", "word": sw})
    ow = orientation_word(float(att.orientation[k]), float(att.elongation[k]))
    if ow:
        out.append({"kind": "orientation", "word": ow})
    return out


def relation_predicates(inst: TileInstances, att: Attributes, k: int, min_frac: float) -> list[dict]:
    """Level-3 predicates: relations to anchors that are themselves unique (the only visible one of their class)."""
    out: list[dict] = []
    ck = int(inst.cls[k])
    for c in np.unique(inst.cls).tolist():
        if c == ck:
            continue
        vis = visible(inst, att, c, min_frac)
        if vis.size == 1:
            a = int(vis[0])
            for rel in ("adjacent", "left_of", "right_of", "above", "below", "nearest"):
                out.append({"kind": "relation", "rel": rel, "anchor": a})
        out.append({"kind": "relation", "rel": "adjacent_class", "class": int(c)})
        out.append({"kind": "relation", "rel": "surrounded", "class": int(c)})
    return out


def phrase(preds: list[dict], inst: TileInstances, noun_of, rng: np.random.Generator) -> tuple[str, str]:
    """A referring expression ``(expression, core)`` for a conjunction of predicates; ``rng`` picks the wording."""
    pre: list[str] = []
    post: list[str] = []
    for p in preds:
        kind = p["kind"]
        if kind == "superlative":
            word = SUPERLATIVES[(p["attr"], p["dir"])]
            if rng.random() < 0.3 and p["attr"] == "area":
                post.append(f"that is the {word} one")
            else:
                pre.append(word)
        elif kind in ("size", "shape", "orientation"):
            pre.append(p["word"])
        elif kind == "grid":
            post.append(GRID_PHRASES[p["cell"]])
        elif kind == "relation":
            if p["rel"] in ("surrounded", "adjacent_class"):
                a = noun_of(inst.classes[p["class"]], plural=False, mass=True)
            else:
                a = noun_of(inst.classes[int(inst.cls[p["anchor"]])], plural=False, mass=False)
            opts = RELATIONS[p["rel"]]
            post.append(opts[int(rng.integers(len(opts)))].format(a=a))
    return " ".join(pre), " and ".join(post)
