"""Rule-based instruction generation for the instances of one tile (the GeoSeg-1M recipe).

* interactive: 1-3 points (60/20/20 %) or a box inside the target; level 1 = box,
  2 = two or three points, 3 = a single point (least information).
* referring: expressions whose uniqueness among the visible instances of the class is
  checked (:mod:`.predicates`); level 1 = category alone, 2 = attribute/position,
  3 = relation to a unique anchor of another class. Several wordings.
* reasoning: a use from the knowledge base; level 1 = class-level query (the target is
  every pixel of the class), 2/3 = the use's noun phrase narrowed by a unique level-2/3
  description of one instance.
* no-target: a referring or reasoning instruction about a class absent from the tile
  (only for sources whose labels are exhaustive); the mask is empty.

Randomness comes only from the ``rng`` passed in (seeded per tile by the engine).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np

from geoseg.data.attributes import Attributes, describe
from geoseg.data.instances import TileInstances
from geoseg.data.instructions import predicates as P
from geoseg.data.instructions.knowledge import KnowledgeBase

REFERRING_WRAPPERS = ["{E}", "{E}.", "Segment {e}.", "Please segment {e}.", "Find {e}.", "Locate {e}.",
                      "Show {e}.", "Mask {e}.", "Highlight {e}."]
REASONING_INSTANCE = ["Where is the {d}?", "Which part of the image is the {d}?", "Can you find the {d}?",
                      "Where would I find the {d}?"]


@dataclass(frozen=True)
class InstructionConfig:
    """How many samples of each kind per tile/instance, and the sampling shares.

    Attributes:
        interactive_per_instance: interactive samples per kept instance.
        referring_per_instance: referring expressions per kept instance (different levels first).
        reasoning_per_instance: instance-level reasoning samples per kept instance.
        class_reasoning: one class-level (level-1) reasoning sample per class with a kept instance.
        no_target_ratio: target share of no-target samples among a tile's samples.
        no_target_per_absent: at most this many no-target samples per absent class and tile
            (Dubai tiles lack one or two classes, so this cap, not the ratio, usually decides).
        no_target_level2_share: share of no-target samples worded at level 2 (a superlative or a
            position: "the leftmost body of water"). Without enough of them a model learns that
            such modifiers mean the target exists.
        distractor_min_frac: components of the target's class smaller than this share of the tile
            are too small to count as distractors for uniqueness.
        box_share: share of interactive samples given as a box (the rest as points).
        point_count_p: probabilities of 1, 2, 3 points.
    """

    interactive_per_instance: int = 1
    referring_per_instance: int = 2
    reasoning_per_instance: int = 1
    class_reasoning: bool = True
    no_target_ratio: float = 0.08
    no_target_per_absent: int = 2
    no_target_level2_share: float = 0.4
    distractor_min_frac: float = 0.001
    box_share: float = 0.4
    point_count_p: tuple[float, float, float] = (0.6, 0.2, 0.2)

    @classmethod
    def from_dict(cls, d: dict | None) -> InstructionConfig:
        from geoseg.errors import InputError

        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown instruction settings {sorted(unknown)}",
                             f"use {sorted(cls.__dataclass_fields__)}")
        if "point_count_p" in d:
            d["point_count_p"] = tuple(float(v) for v in d["point_count_p"])
        cfg = cls(**d)
        for name, ok in (("no_target_ratio", 0.0 <= cfg.no_target_ratio < 1.0),
                         ("no_target_level2_share", 0.0 <= cfg.no_target_level2_share <= 1.0),
                         ("no_target_per_absent", cfg.no_target_per_absent >= 0)):
            if not ok:
                raise InputError(f"instruction setting {name} = {getattr(cfg, name)!r} is out of range",
                                 "use a share in [0, 1) for the ratio, [0, 1] for the level-2 share, "
                                 "a count >= 0 per absent class")
        return cfg


@dataclass
class Sample:
    """One instruction before it becomes a shard row.

    ``target`` is ``("instance", k)``, ``("class", c)`` or ``("none", -1)``.
    """

    task: str
    level: int
    category: str
    instruction: str
    target: tuple[str, int]
    prompt: dict = field(default_factory=dict)
    answer: str = ""
    attributes: dict = field(default_factory=dict)

    @property
    def empty_target(self) -> bool:
        return self.target[0] == "none"

    @property
    def instance_id(self) -> int:
        return self.target[1] if self.target[0] == "instance" else -1


def _num(v: float) -> str:
    return f"{round(float(v), 3):g}"


def _one(options: list[str], rng: np.random.Generator) -> str:
    """One of ``options`` (cheaper than ``rng.choice``, which converts the list to an array)."""
    return options[int(rng.integers(len(options)))]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def interactive(inst: TileInstances, k: int, cfg: InstructionConfig, rng: np.random.Generator) -> Sample:
    """Points inside the target (well away from its border when it is wide enough) or its box."""
    h, w = inst.shape
    x, y, bw, bh = (int(v) for v in inst.bbox[k])
    cat = inst.classes[int(inst.cls[k])]
    if rng.random() < cfg.box_share:
        box = [float(x), float(y), float(x + bw), float(y + bh)]
        norm = [box[0] / w, box[1] / h, box[2] / w, box[3] / h]
        text = (f"Please segment the target corresponding to the box x0,y0=[{_num(norm[0])},{_num(norm[1])}], "
                f"x1,y1=[{_num(norm[2])},{_num(norm[3])}].")
        prompt = {"box": box, "box_norm": [round(v, 5) for v in norm]}
        return Sample("interactive", 1, cat, text, ("instance", k), prompt)
    n = int(rng.choice(3, p=np.asarray(cfg.point_count_p) / np.sum(cfg.point_count_p))) + 1
    crop = np.pad((inst.ids[y:y + bh, x:x + bw] == k + 1).view(np.uint8), 1)
    dist = cv2.distanceTransform(crop, cv2.DIST_L2, 3)[1:-1, 1:-1]
    thr = max(1.0, 0.5 * float(dist.max()))
    ys, xs = np.nonzero(dist >= thr)
    if ys.size == 0:
        ys, xs = np.nonzero(dist > 0)
    pick = rng.choice(ys.size, size=min(n, ys.size), replace=False)
    pts = [[float(x + xs[i]) + 0.5, float(y + ys[i]) + 0.5] for i in np.sort(pick)]
    norm = [[p[0] / w, p[1] / h] for p in pts]
    coords = [f"[{_num(a)}, {_num(b)}]" for a, b in norm]
    if len(coords) == 1:
        text = f"Please segment the target corresponding to the point {coords[0]}."
    else:
        text = f"Please segment the target corresponding to the points {', '.join(coords[:-1])} and {coords[-1]}."
    prompt = {"points": pts, "labels": [1] * len(pts), "points_norm": [[round(a, 5), round(b, 5)] for a, b in norm]}
    return Sample("interactive", 3 if len(pts) == 1 else 2, cat, text, ("instance", k), prompt)


def unique_descriptions(inst: TileInstances, att: Attributes, k: int, cfg: InstructionConfig) -> list[list[dict]]:
    """Every predicate conjunction (one or two parts) that singles out instance ``k`` among its class."""
    idx = P.visible(inst, att, int(inst.cls[k]), cfg.distractor_min_frac)
    if k not in idx:
        idx = np.sort(np.append(idx, k))
    if idx.size == 1:
        return [[{"kind": "only"}]]
    singles = P.single_attribute_predicates(inst, att, k)
    found = [[p] for p in singles if P.unique([p], inst, att, idx, k)]
    if not found:  # two attributes together, e.g. "the small building in the top right corner"
        combinable = [p for p in singles if p["kind"] in ("grid", "size", "shape", "orientation")]
        for a, b in itertools.combinations(combinable, 2):
            if P.unique([a, b], inst, att, idx, k):
                found.append([a, b])
    for p in P.relation_predicates(inst, att, k, cfg.distractor_min_frac):
        if P.evaluate(p, inst, att, np.array([k]))[0] and P.unique([p], inst, att, idx, k):
            found.append([p])
    return found


def _pick(cands: list[list[dict]], n: int, rng: np.random.Generator) -> list[list[dict]]:
    """Up to ``n`` descriptions, one per level first (levels in random order), then any."""
    by_level: dict[int, list[list[dict]]] = {}
    for c in cands:
        by_level.setdefault(P.level_of(c), []).append(c)
    levels = list(by_level)
    rng.shuffle(levels)
    out: list[list[dict]] = []
    for lv in levels:
        if len(out) < n:
            out.append(by_level[lv].pop(int(rng.integers(len(by_level[lv])))))
    rest = [c for lv in levels for c in by_level[lv]]
    while len(out) < n and rest:
        out.append(rest.pop(int(rng.integers(len(rest)))))
    return out


def _expression(preds: list[dict], inst: TileInstances, noun: str, kb: KnowledgeBase,
                rng: np.random.Generator) -> str:
    pre, post = P.phrase(preds, inst, kb.wording, rng)
    return "the " + " ".join(s for s in (pre, noun, post) if s)


def generate(inst: TileInstances, att: Attributes, keep: np.ndarray, cfg: InstructionConfig, kb: KnowledgeBase,
             rng: np.random.Generator, allow_no_target: bool = True,
             blocked: frozenset[int] = frozenset()) -> list[Sample]:
    """All samples of one tile.

    ``blocked`` classes (e.g. with COCO crowd regions in the tile) get interactive samples only:
    no referring/reasoning (uniqueness cannot be checked against a crowd), no class-level
    target and no no-target question, since their class mask is incomplete.
    """
    out: list[Sample] = []
    kept = np.flatnonzero(keep)
    described: dict[int, dict] = {}

    def attrs(k: int) -> dict:
        if k not in described:
            described[k] = describe(inst, att, k)
        return described[k]

    for k in kept.tolist():
        cat = inst.classes[int(inst.cls[k])]
        for _ in range(cfg.interactive_per_instance):
            s = interactive(inst, k, cfg, rng)
            s.attributes = attrs(k)
            out.append(s)
        need = cfg.referring_per_instance + cfg.reasoning_per_instance
        if need == 0 or int(inst.cls[k]) in blocked:  # uniqueness cannot be checked against a crowd
            continue
        cands = unique_descriptions(inst, att, k, cfg)
        noun = kb.wording(cat)
        for preds in _pick(list(cands), cfg.referring_per_instance, rng):
            expr = _expression(preds, inst, noun, kb, rng)
            text = _one(REFERRING_WRAPPERS, rng).format(E=_cap(expr), e=expr)
            a = dict(attrs(k))
            a["expression"] = {"predicates": preds, "visible_same_class": int(
                P.visible(inst, att, int(inst.cls[k]), cfg.distractor_min_frac).size)}
            out.append(Sample("referring", P.level_of(preds), cat, text, ("instance", k), {}, expr, a))
        uses = kb.uses(cat)
        inst_cands = [c for c in cands if P.level_of(c) >= 2]
        if uses and inst_cands:
            for preds in _pick(inst_cands, cfg.reasoning_per_instance, rng):
                use = uses[int(rng.integers(len(uses)))]
                desc = _expression(preds, inst, use.noun, kb, rng)[4:]
                text = _one(REASONING_INSTANCE, rng).format(d=desc)
                expr = _expression(preds, inst, noun, kb, rng)
                a = dict(attrs(k))
                a["expression"] = {"predicates": preds}
                a["knowledge"] = use.query
                out.append(Sample("reasoning", P.level_of(preds), cat, text, ("instance", k), {},
                                  f"{use.answer} Here: {expr}.", a))

    present = inst.class_present()
    if cfg.class_reasoning and kept.size:
        area_frac = present / float(inst.ids.size)
        for c in sorted(set(inst.cls[kept].tolist())):
            cat = inst.classes[c]
            uses = kb.uses(cat)
            if c in blocked or not uses or not (0.005 <= area_frac[c] <= 0.7):
                continue
            use = uses[int(rng.integers(len(uses)))]
            out.append(Sample("reasoning", 1, cat, use.query, ("class", c), {}, use.answer,
                              {"category": cat, "area_frac": round(float(area_frac[c]), 5), "knowledge": use.query,
                               "class_level": True}))

    absent = [c for c in range(len(inst.classes)) if present[c] == 0 and c not in blocked]
    if allow_no_target and absent and cfg.no_target_ratio > 0 and out:
        expected = len(out) * cfg.no_target_ratio / max(1e-9, 1.0 - cfg.no_target_ratio)
        n = int(expected) + int(rng.random() < expected - int(expected))
        for _ in range(min(n, cfg.no_target_per_absent * len(absent))):
            c = absent[int(rng.integers(len(absent)))]
            out.append(_no_target(inst, c, kb, rng, cfg.no_target_level2_share))
    return out


def _no_target(inst: TileInstances, c: int, kb: KnowledgeBase, rng: np.random.Generator,
               level2_share: float) -> Sample:
    cat = inst.classes[c]
    noun = kb.wording(cat)
    uses = kb.uses(cat)
    level = 1 if rng.random() < 1.0 - level2_share else 2
    extra_pre, extra_post = "", ""
    if level == 2:
        if rng.random() < 0.5:
            extra_pre = _one(["largest", "smallest", "leftmost", "topmost", "brightest"], rng)
        else:
            extra_post = _one(P.GRID_PHRASES, rng)
    answer = f"There is no {noun} in this image."
    info = {"category": cat, "absent": True}
    if uses and rng.random() < 0.5:
        use = uses[int(rng.integers(len(uses)))]
        if level == 1:
            text = use.query
        else:
            desc = " ".join(s for s in (extra_pre, use.noun, extra_post) if s)
            text = _one(REASONING_INSTANCE, rng).format(d=desc)
        return Sample("reasoning", level, cat, text, ("none", -1), {}, f"None: {answer}", {**info, "knowledge": use.query})
    expr = "the " + " ".join(s for s in (extra_pre, noun, extra_post) if s)
    text = _one(REFERRING_WRAPPERS, rng).format(E=_cap(expr), e=expr)
    return Sample("referring", level, cat, text, ("none", -1), {}, answer, info)
