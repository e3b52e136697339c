"""How far a text instruction is from the instructions the unified model was trained on.

The unified model reads an instruction through the frozen English sentence encoder
all-MiniLM-L6-v2 and was trained only on the data engine's English instructions about its
checkpoint's classes (``cfg.classes``: land, water, building, vegetation, road for the shipped
model). Anything else still gets an answer: "l'eau" or "das Wasser" can come back with a
confident, arbitrary mask, "cars" with some class's pixels. Nothing in the answer tells the
user that the instruction was not understood, so this module measures it on the text side and
:func:`check_instructions` turns a distant instruction into a note (``geoseg segment``).

**Measure.** The instruction's sentence embedding (the mean of the MiniLM token embeddings the
model already computed and cached for it, ``[CLS]`` and ``[SEP]`` included, as
all-MiniLM-L6-v2's own mean pooling), compared by cosine with a **reference set**:
``distance = 1 - max cosine`` to the nearest reference instruction (0 for an instruction of
the training kind; 0.5-0.85 for gibberish and most translations).

**Reference set** (:func:`reference_instructions`): built at run time for the checkpoint's own
classes from the wording the data engine writes its instructions with (the referring wrappers,
every level-2 predicate, each relation, the reasoning templates of
:mod:`geoseg.data.instructions`, phrased by its own ``phrase``, and each class's names and uses
from ``geoseg/knowledge/categories.yaml``), so there is one source of truth and a checkpoint
trained on other classes gets references of its own. It is an enumeration (every wrapper and
every predicate once per class, the rest rotated through the classes), not a sample, so each
class and each kind of wording is covered. For the five Dubai classes it is 313 instructions,
encoded once per process when the first instruction is checked (0.65-0.76 s on the 2-core CPU
when quiet, 3-5 s while other jobs loaded it; 0.5 MB) and shared by every segmenter with the
same encoder and classes. If the data engine's wording changes, rerun
``benchmarks/instruction_ood.py`` and check the threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.notes import note

if TYPE_CHECKING:
    import torch

    from geoseg.data.instructions.knowledge import KnowledgeBase
    from geoseg.prompts import Prompt
    from geoseg.unified.text_encoder import TextEncoder

log = logging.getLogger(__name__)

#: An instruction farther than this from every reference instruction is flagged as unfamiliar.
#: Calibrated by ``benchmarks/instruction_ood.py`` for the shipped model (2026-12-03): the smallest
#: step of 0.01 that flags at most 1 % of the 1,241 referring/reasoning rows of the validation split
#: (tile_6 of ``configs/data/dubai.yaml``, 99th percentile 0.228). At 0.24 it flags 0.64 % of them,
#: 1.71 % of the 12,370 held-out tile_7 rows (0.69 % at 0.26, 0.03 % at 0.30), and of hand-written
#: sets 14-15 of 15 translations per language (French, German, Spanish, Chinese, Arabic), 19 of 20
#: objects outside the classes, 20 of 20 gibberish and 20 of 25 English synonyms ("the sea" and
#: "houses" among them, which the model answers right; "trees" and "grass", which it does not).
#: Measured with all-MiniLM-L6-v2; another encoder (``GEOSEG_TEXT_ENCODER``) needs its own value.
UNFAMILIAR_DISTANCE = 0.24

#: what a user can do instead of rephrasing (the same routes as the empty-answer hint)
_ROUTES = "mark the target with a point or a box, or use the trainfree backend (a multimodal LLM grounds the text)"


def _words(fn: Any, grid: Sequence[tuple]) -> list[str]:
    """The distinct words an attribute-wording function of the data engine returns over ``grid``."""
    return sorted({w for args in grid for w in [fn(*args)] if w})


def _predicates() -> list[dict]:
    """Every level-2 predicate the data engine words (superlatives, grid cells, size, shape, orientation)."""
    from geoseg.data.attributes import GRID_PHRASES, orientation_word, shape_word, size_word
    from geoseg.data.instructions.predicates import SUPERLATIVES

    fractions = [(f,) for f in np.linspace(0.0, 1.0, 201)]
    shapes = [(e, c) for e in (1.0, 1.4, 2.0, 3.5, 10.0) for c in (0.1, 0.5, 0.9)]
    orientations = [(d, 5.0) for d in range(0, 180, 15)]
    preds: list[dict] = [{"kind": "superlative", "attr": a, "dir": d} for a, d in SUPERLATIVES]
    preds += [{"kind": "grid", "cell": i} for i in range(len(GRID_PHRASES))]
    preds += [{"kind": "size", "word": w} for w in _words(size_word, fractions)]
    preds += [{"kind": "shape", "word": w} for w in _words(shape_word, shapes)]
    preds += [{"kind": "orientation", "word": w} for w in _words(orientation_word, orientations)]
    return preds


def _relations(n_classes: int, i: int) -> list[dict]:
    """One level-3 predicate of each relation kind for class ``i``, its anchor rotated through the others."""
    from geoseg.data.instructions.predicates import RELATIONS

    if n_classes < 2:
        return []
    out = []
    for j, rel in enumerate(RELATIONS):
        other = (i + 1 + j % (n_classes - 1)) % n_classes
        key = "class" if rel in ("adjacent_class", "surrounded") else "anchor"
        out.append({"kind": "relation", "rel": rel, key: other})
    return out


def reference_instructions(classes: Sequence[str], kb: KnowledgeBase | None = None) -> list[str]:
    """Instructions of every kind the data engine writes about ``classes``, each wording family once per class.

    Per class: its names (the class name, the knowledge base's noun, plural and mass wording,
    with "the"), "the <noun>" in every referring wrapper, every level-2 predicate and one of each
    relation kind (level 3) phrased by the engine's own :func:`~geoseg.data.instructions.predicates.phrase`,
    each use's class-level query, and each use's noun in every instance-level reasoning template.
    Wrappers, anchors and predicates rotate with the class index, so each class gets every
    wrapper and the set stays small (about 60 instructions per class: 313 for the five Dubai
    classes). Deterministic: the wording choices ``phrase`` draws come from a fixed seed.
    """
    from geoseg.data.instructions.generate import REASONING_INSTANCE, REFERRING_WRAPPERS
    from geoseg.data.instructions.knowledge import load_kb
    from geoseg.data.instructions.predicates import phrase

    kb = kb or load_kb()
    names = list(classes)
    # what phrase() reads of a tile: class names, and the class of an anchor (instance k = class k here)
    tile = SimpleNamespace(classes=names, cls=np.arange(len(names)))
    rng = np.random.default_rng(0)
    level2 = _predicates()
    out: list[str] = []

    def expression(preds: list[dict], noun: str) -> str:
        pre, post = phrase(preds, tile, kb.wording, rng)
        return "the " + " ".join(s for s in (pre, noun, post) if s)

    def wrap(expr: str, k: int) -> str:
        return REFERRING_WRAPPERS[k % len(REFERRING_WRAPPERS)].format(E=expr[:1].upper() + expr[1:], e=expr)

    for i, cat in enumerate(names):
        noun = kb.wording(cat)
        for name in dict.fromkeys((cat, noun, kb.wording(cat, plural=True), kb.wording(cat, mass=True))):
            out += [name, f"the {name}"]
        out += [wrap(f"the {noun}", k) for k in range(len(REFERRING_WRAPPERS))]
        described = level2 + _relations(len(names), i)
        out += [wrap(expression([p], noun), i + k) for k, p in enumerate(described)]
        uses = kb.uses(cat)
        for m, use in enumerate(uses):
            out.append(use.query)
            for t, template in enumerate(REASONING_INSTANCE):
                k = (i * len(uses) + m) * len(REASONING_INSTANCE) + t  # each class continues where the last one ended
                out.append(template.format(d=expression([described[k % len(described)]], use.noun)[4:]))
    return list(dict.fromkeys(" ".join(t.split()) for t in out))


def sentence_vectors(tokens: Sequence[torch.Tensor]) -> torch.Tensor:
    """Unit-length sentence embeddings (``N×D``): each text's mean token embedding, normalised."""
    import torch

    from geoseg.unified.select_fit import sentence_vector

    means = torch.stack([torch.from_numpy(sentence_vector(t)) for t in tokens])
    return torch.nn.functional.normalize(means, dim=1)


@dataclass
class InstructionReference:
    """The reference instructions of one class list under one encoder, as unit sentence vectors."""

    classes: tuple[str, ...]
    texts: list[str]
    vectors: torch.Tensor
    seconds: float = 0.0  # what building it cost (generation and encoding)

    @classmethod
    def build(cls, encoder: TextEncoder, classes: Sequence[str]) -> InstructionReference:
        """Generate :func:`reference_instructions` for ``classes`` and encode them with ``encoder``."""
        import time

        t0 = time.perf_counter()
        texts = reference_instructions(classes)
        order = sorted(texts, key=len)  # batches of similar length: less padding
        vectors = sentence_vectors(encoder.encode_apart(order))  # the model's own cache stays as it was
        ref = cls(tuple(classes), order, vectors, round(time.perf_counter() - t0, 3))
        log.debug("instruction reference: %d instructions about %s in %.2fs", len(order), ", ".join(classes),
                  ref.seconds)
        return ref

    def distance(self, tokens: torch.Tensor) -> tuple[float, str]:
        """``1 - max cosine`` of an instruction's token embeddings to the references, and the nearest one."""
        sims = self.vectors @ sentence_vectors([tokens])[0]
        best = int(sims.argmax())
        return max(0.0, round(float(1.0 - sims[best]), 4)), self.texts[best]  # never -0.0 for a copy


#: references already built in this process, by encoder folder and class list
_REFERENCES: dict[tuple[str, tuple[str, ...]], InstructionReference] = {}


def reference_for(encoder: TextEncoder, classes: Sequence[str]) -> InstructionReference:
    """The (cached) :class:`InstructionReference` of ``classes`` under ``encoder``."""
    key = (str(encoder.path), tuple(classes))
    if key not in _REFERENCES:
        _REFERENCES[key] = InstructionReference.build(encoder, classes)
    return _REFERENCES[key]


def unfamiliar_note(text: str, classes: Sequence[str]) -> str:
    """The one line a user reads when ``text`` is unlike the instructions the model was trained on.

    It names the classes and the two ways to ask that work: a class name alone for the whole
    class (asked as the class's question, :mod:`geoseg.unified.class_questions`), or a referring
    expression in the training instructions' wording for one instance.
    """
    from geoseg.data.instructions.knowledge import load_kb

    example = f"'the largest {load_kb().wording(classes[0])}'" if classes else "'the largest one'"
    return (f"the instruction {text!r} is unlike what this model was trained on (English instructions about "
            f"{', '.join(classes)}), so its answer may not follow it; rephrase it in English: a class name alone "
            f"for the whole class, or an expression such as {example} for one, {_ROUTES}")


@dataclass
class InstructionCheck:
    """What :func:`check_instructions` found: the notes (an instruction asked as the class's question, an
    unfamiliar one), the unfamiliar ones alone (for the server, whose clients have no --literal-text), and
    the provenance record."""

    notes: list[str] = field(default_factory=list)
    record: dict | None = None
    unfamiliar: list[str] = field(default_factory=list)


def check_instructions(segmenter: Any, prompts: Sequence[Prompt]) -> InstructionCheck:
    """Measure every text prompt with ``segmenter.instruction_distance`` (when it has one) and log a warning per
    unfamiliar instruction. Backends without the method (classical, trainfree, sam) get an empty check."""
    measure = getattr(segmenter, "instruction_distance", None)
    texts = [(i, p) for i, p in enumerate(prompts) if p.text is not None and p.text.strip()]
    if measure is None or not texts:
        return InstructionCheck()
    out = InstructionCheck(record={"measure": "1 - max cosine of the MiniLM sentence embedding to the data "
                                              "engine's instructions about the model's classes",
                                   "threshold": UNFAMILIAR_DISTANCE, "prompts": []})
    classes = tuple(segmenter.cfg.classes)
    read_as = getattr(segmenter, "read_as", None)
    for i, p in texts:
        distance, nearest = measure(p)
        flagged = distance > UNFAMILIAR_DISTANCE
        entry = {"prompt": i, "distance": distance, "nearest": nearest, "unfamiliar": flagged}
        asked = read_as(p).text if read_as is not None else p.text
        if asked != p.text:  # a bare class name, asked as the class's question (geoseg.unified.class_questions)
            entry["read_as"] = asked
            out.notes.append(note(f"read {p.text!r} as this model's question for the whole class, {asked!r}: it "
                                  "was trained to answer a whole class in that form (--literal-text asks the text "
                                  "as written)", logging.INFO))
        out.record["prompts"].append(entry)
        if flagged:
            out.unfamiliar.append(note(unfamiliar_note(p.text, classes)))
            out.notes.append(out.unfamiliar[-1])
    return out
