"""The ``geoseg`` commands the user docs show exist, with the options they are shown with.

Users copy commands from README.md and the docs/*.md pages listed in ``DOCS``. Every
``geoseg ...`` command in a code block or an inline code span there is resolved against the
real click command tree (``geoseg.cli.cli``): each subcommand must exist, every option given
to it must be one of its own options (a group's options, such as ``-q``, only before the
subcommand), and a value given to a choice option must be one of its choices. The option
tables of batch.md (batch options of ``geoseg segment``) and trainfree.md (``--vlm-*`` options
of four commands) are checked the same way. No command is run, so this takes well under a second.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from geoseg.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md"] + [f"docs/{name}.md" for name in ("batch", "bench", "data", "serve", "trainfree", "segment", "model", "model_card", "model_history")]

_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`([^`]+)`")
_START = re.compile(r"(?:^|(?<=[\s;(&|/]))geoseg[ \t]+(?=[-a-z])")
_CELL = re.compile(r"(?<!\\)\|")  # a table's cell border (``\|`` is a pipe inside a cell)
_SHELL_STOP = {"|", "||", "&&", ";", ">", ">>", "<", "2>&1", "&"}


@dataclass(frozen=True)
class Shown:
    """One ``geoseg`` command as a doc shows it."""

    doc: str
    text: str


def _commands(doc: str) -> list[Shown]:
    """The ``geoseg ...`` commands of ``doc``: one per shell line of its code blocks and per inline span."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    found: list[Shown] = []
    for lang, body in _FENCE.findall(text):
        if lang.strip() in ("python", "csv", "json"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            found += [Shown(doc, part) for part in _split(line.partition(" #")[0])]
    prose = _FENCE.sub("", text)
    for span in _INLINE.findall(prose):
        found += [Shown(doc, part) for part in _split(span.replace("\n", " "))]
    return found


def _split(line: str) -> list[str]:
    """The text after each ``geoseg`` that starts a command in ``line``."""
    matches = list(_START.finditer(line))
    ends = [m.start() for m in matches[1:]] + [len(line)] if matches else []
    return [line[m.end():end] for m, end in zip(matches, ends, strict=True)]


def _tokens(text: str) -> list[str]:
    """Shell words up to a pipe, redirection or list operator; the brackets of ``[--optional]`` dropped."""
    try:
        words = shlex.split(text)
    except ValueError:  # a quote the span cuts off
        words = text.split()
    out = []
    for w in words:
        if w in _SHELL_STOP or w.startswith("$(") or w.startswith(")"):
            break
        w = w.strip("[]")
        if w:
            out.append(w)
    return out


def _options(cmd: click.Command) -> dict[str, click.Option]:
    return {name: p for p in cmd.params if isinstance(p, click.Option) for name in (*p.opts, *p.secondary_opts)}


def _is_placeholder(value: str) -> bool:
    """A value the doc leaves to the reader (``F``, ``N``, ``unigeoseg|zero|skip``, ``...``)."""
    return value.isupper() or "|" in value or "..." in value or value.startswith(("$", "<", "{"))


def problems(text: str) -> list[str]:
    """What is wrong with ``geoseg <text>``: unknown subcommands, options, or choice values."""
    ctx = click.Context(cli, info_name="geoseg")
    cmd: click.Command = cli
    path = ["geoseg"]
    words = _tokens(text)
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-") and len(word) > 1 and not word.lstrip("-")[:1].isdigit():
            name, eq, value = word.partition("=")
            opt = _options(cmd).get(name)
            if opt is None and name not in ("-h", "--help"):
                where = "before the subcommand" if isinstance(cmd, click.Group) else f"of '{' '.join(path)}'"
                out.append(f"'{' '.join(path)} ... {name}': no such option {where}")
            if opt is not None and not opt.is_flag and not opt.count and not eq and i + 1 < len(words):
                if not words[i + 1].startswith("-") or words[i + 1].lstrip("-")[:1].isdigit():
                    i += 1
                    value = words[i]
            if opt is not None and isinstance(opt.type, click.Choice) and value and not _is_placeholder(value):
                if value not in opt.type.choices:
                    out.append(f"'{' '.join(path)} {name} {value}': not one of {list(opt.type.choices)}")
        elif isinstance(cmd, click.Group):
            sub = cmd.get_command(ctx, word)
            if sub is None:
                out.append(f"'{' '.join(path)} {word}': no such command")
                break
            cmd, path = sub, [*path, word]
        i += 1
    return out


def _table_flags(doc: str, header: str) -> tuple[list[str], list[str]]:
    """The commands named in the header cell starting ``header`` of ``doc``'s table and its first-column options."""
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {header}"))
    commands = re.findall(r"`([^`]+)`", _CELL.split(lines[start])[1])
    flags = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        flags += re.findall(r"`(-[^`]*)`", _CELL.split(ln)[1])
    return commands, flags


def test_the_checker_finds_what_is_wrong():
    """The check is not vacuous: wrong commands, options, placements and choices are reported."""
    assert problems("segment scene.tif --box 1,2,3,4 -o m.tif --vector m.gpkg") == []
    assert problems("-q segment 'scenes/*.tif' --text x -o out/") == []
    assert problems("bench run --model x --data d -o r [--empty-rule unigeoseg|zero|skip]") == []
    assert problems("segment scene.tif --no-such-flag -o m.tif") != []
    assert problems("segment scene.tif -q -o m.tif") != []          # a group option after the subcommand
    assert problems("bench rescore --data d") != []
    assert problems("bench run --model x --data d -o r --empty-rule never") != []
    assert problems("data build --config c.yaml -o out | head") == []  # the pipe ends the command
    assert problems("bench run --model x --data --bogus r") != []  # a value left out hides no option


def test_every_doc_shows_commands():
    found = {doc: _commands(doc) for doc in DOCS}
    assert all(found.values()), {doc: len(c) for doc, c in found.items()}
    assert sum(len(c) for c in found.values()) >= 60


@pytest.mark.parametrize("doc", DOCS)
def test_doc_commands_exist_with_their_options(doc):
    wrong = [f"{shown.doc}: {p}" for shown in _commands(doc) for p in problems(shown.text)]
    assert not wrong, "\n".join(wrong)


def test_batch_option_table_names_options_of_segment():
    commands, flags = _table_flags("docs/batch.md", "option |")
    assert not commands and len(flags) >= 6
    wrong = [p for flag in flags for p in problems(f"segment 'scenes/*.tif' {flag.split()[0]}")]
    assert not wrong, "\n".join(wrong)


def test_trainfree_option_table_names_options_of_each_listed_command():
    commands, flags = _table_flags("docs/trainfree.md", "flag (")
    assert len(commands) == 4 and len(flags) >= 7, (commands, flags)
    wrong = [p for c in commands for flag in flags for p in problems(f"{c} {flag.split()[0]}")]
    assert not wrong, "\n".join(wrong)
