"""User-facing errors.

Every problem a user can fix (bad file, bad prompt, bad option) is raised as a
:class:`GeosegError` whose message is one line naming the problem *and* the fix.
The CLI prints it as ``error: ...`` and exits non-zero; the library lets it propagate.
"""

from __future__ import annotations


class GeosegError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} ({fix})" if fix else problem)


class InputError(GeosegError):
    """Unreadable, missing or malformed input data."""


class PromptError(GeosegError):
    """A prompt that cannot be applied to the image (outside it, unsupported kind, empty text)."""


class MissingExtraError(GeosegError, ImportError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, package: str) -> None:
        GeosegError.__init__(
            self,
            f"this feature needs the optional package '{package}'",
            f"install it with: pip install 'geoseg[{extra}]'",
        )


def require(module: str, extra: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(extra, module.split(".")[0]) from exc


def reason(exc: BaseException, limit: int = 160) -> str:
    """Why ``exc`` happened, as one short line to put inside a :class:`GeosegError`.

    The first line of its message, cut to ``limit`` characters — library messages (torch, GDAL,
    transformers) often run to a paragraph, which would break the one-line rule. When that line
    says nothing by itself (empty, or a bare number or key such as torch's unpickling errors
    give), the exception's type is named in front of it. A YAML syntax error (PyYAML's message
    spans several lines) is given as its line, column and problem.
    """
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)  # a YAML (PyYAML) error
    if isinstance(problem, str) and problem:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return f"{where}{' '.join(problem.split())}"[:limit]
    lines = str(exc).splitlines()
    line = lines[0].strip() if lines else ""
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    if not line.strip("'\"").strip() or line.strip("'\"").isdigit():
        return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line
