"""The curated knowledge base (``geoseg/knowledge/categories.yaml``) behind reasoning instructions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from geoseg.errors import InputError, reason

DEFAULT_KB = Path(__file__).resolve().parents[2] / "knowledge" / "categories.yaml"


@dataclass(frozen=True)
class Use:
    """One thing a category is for or implies."""

    query: str
    noun: str
    answer: str


@dataclass(frozen=True)
class Entry:
    noun: str
    plural: str
    mass: str
    uses: tuple[Use, ...]


class KnowledgeBase:
    """Category wording and uses, looked up by class name (case-insensitive, through aliases)."""

    def __init__(self, data: dict, path: str = "") -> None:
        self.path = path
        self.version = data.get("version", 1)
        self.aliases = {str(k).lower(): str(v).lower() for k, v in (data.get("aliases") or {}).items()}
        self.entries: dict[str, Entry] = {}
        for name, e in (data.get("categories") or {}).items():
            try:
                uses = tuple(Use(str(u["query"]), str(u["noun"]), str(u["answer"])) for u in e.get("uses", []))
            except KeyError as exc:
                raise InputError(f"knowledge base {path}: category {name!r} has a use without {exc}",
                                 "give every use a query, a noun and an answer") from exc
            noun = str(e.get("noun", name))
            plural = str(e.get("plural", noun + "s"))
            self.entries[str(name).lower()] = Entry(noun, plural, str(e.get("mass", plural)), uses)

    def key(self, category: str) -> str:
        c = category.lower().strip()
        return self.aliases.get(c, c)

    def get(self, category: str) -> Entry | None:
        return self.entries.get(self.key(category))

    def noun(self, category: str) -> str:
        e = self.get(category)
        return e.noun if e else category.replace("_", " ").replace("-", " ")

    def wording(self, category: str, plural: bool = False, mass: bool = False) -> str:
        """The noun phrase for a category: singular, plural, or mass (\"surrounded by water\")."""
        e = self.get(category)
        if e is None:
            base = category.replace("_", " ").replace("-", " ")
            return base + ("s" if plural or mass else "")
        return e.mass if mass else (e.plural if plural else e.noun)

    def uses(self, category: str) -> tuple[Use, ...]:
        e = self.get(category)
        return e.uses if e else ()


@lru_cache(maxsize=4)
def load_kb(path: str | None = None) -> KnowledgeBase:
    """Load a knowledge-base YAML (the packaged one by default)."""
    p = Path(path) if path else DEFAULT_KB
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the knowledge base {p} ({reason(exc)})", "pass a valid YAML file as knowledge:") from exc
    if not isinstance(data, dict) or "categories" not in data:
        raise InputError(f"knowledge base {p} has no 'categories' mapping", "see geoseg/knowledge/categories.yaml")
    return KnowledgeBase(data, str(p))
