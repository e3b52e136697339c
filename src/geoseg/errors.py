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
