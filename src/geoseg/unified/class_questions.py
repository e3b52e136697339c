"""A bare class name ("buildings", "the water", "all roads") asked as the model's own class-level question.

A GIS user asks for a whole class by naming it. The unified model was trained on the data
engine's instructions, where a whole class is asked for only by a class-level question
("Where could a boat sail in this image?" for water, ``uses[].query`` in
``geoseg/knowledge/categories.yaml``); "the building" or "the body of water" are referring
expressions for one instance. Asked as typed, bare class names get erratic answers, far below
the question's (pooled IoU on the Dubai images, the shipped model; ``benchmarks/class_questions.py``):

=================  =========================  ===============================
region             bare names as typed         the class's first question
=================  =========================  ===============================
tile_6 (9 images)  0.367 (vegetation 0.06)    0.590
tile_7 (9 crops)   0.397 (buildings 0.07)     0.580
=================  =========================  ===============================

(bare names: "water", "buildings", "vegetation", "roads", "land"; mean of the five classes.) So a
text prompt whose whole text names one of the checkpoint's classes, and that has no explicit
task, is read as that class's first question; the prompt keeps the user's text and the
provenance records what the model read. Prompts with an explicit task (the benchmark's, its
category-only baseline) are never rewritten, nor is anything longer than a class name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache

from geoseg.prompts import Prompt

_WORDS = re.compile(r"[^\w\s-]")


def _normal(text: str) -> str:
    return " ".join(_WORDS.sub(" ", text.lower()).split())


@lru_cache(maxsize=8)
def class_questions(classes: tuple[str, ...]) -> dict[str, str]:
    """Every bare way of naming a class of ``classes`` (normalised text) -> the class's first class-level question.

    Accepted: the class name, its noun, plural and mass wording (``"water"``, ``"bodies of water"``,
    ``"buildings"``), each also after "all" or "all the", and after "the" unless it is the
    singular of a countable noun ("the building" is one building; "the water" is all of it).
    Classes without a question in the knowledge base are not rewritten.
    """
    from geoseg.data.instructions.knowledge import load_kb

    kb = load_kb()
    out: dict[str, str] = {}
    for cls in classes:
        uses = kb.uses(cls)
        if not uses:
            continue
        noun = kb.wording(cls)
        names = {cls, noun, kb.wording(cls, plural=True), kb.wording(cls, mass=True), cls + "s"}
        forms = set(names)
        for name in names:
            forms |= {f"all {name}", f"all the {name}"}
            if name != noun:  # "the building", "the body of water": one instance; "the water": all of it
                forms.add(f"the {name}")
        out.update({_normal(f): uses[0].query for f in forms})
    return out


def as_class_question(prompt: Prompt, classes: Sequence[str]) -> Prompt:
    """``prompt`` with its text replaced by the class's question when the text is a bare class name, else itself."""
    if prompt.text is None or prompt.task is not None or prompt.points or prompt.box is not None:
        return prompt
    question = class_questions(tuple(classes)).get(_normal(prompt.text))
    return replace(prompt, text=question) if question is not None else prompt
