"""Where a training run's log messages go: ``train.log``, and what the caller's logging asks for.

A run logs its progress at INFO on ``geoseg.unified`` and writes all of it to the run folder's
``train.log``. Two things must not follow from that:

* a start that fails (a bad setting, a checkpoint that does not fit, no data) must print nothing but
  its one-line error: progress messages wait until every start-up check has passed, and are
  dropped when one fails (warnings pass at once: they concern the user either way);
* INFO must not reach handlers that did not ask for it: raising the logger to INFO for the file
  would otherwise let every progress line through to the root handler of ``geoseg -q`` (which
  shows errors only). Handlers on ``geoseg.unified`` itself (the CLI's progress stream) get INFO;
  the loggers above get only what their own level let through before the run.
"""

from __future__ import annotations

import logging
from pathlib import Path

UNIFIED = "geoseg.unified"


def _file_handler(path: Path, append: bool) -> logging.Handler:
    h = logging.FileHandler(path, mode="a" if append else "w")
    h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    h.setLevel(logging.INFO)
    return h


class RunLog(logging.Handler):
    """Stands in for the handlers of ``geoseg.unified`` while one run lasts (a context manager).

    Until :meth:`begin` it holds the run's messages; from then on it passes each to ``train.log``, to
    the handlers the logger had, and up the logger tree when the record is at or above the level the
    caller's logging set for it.
    """

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.logger = logging.getLogger(UNIFIED)
        self.held: list[logging.LogRecord] = []
        self.file: logging.Handler | None = None

    def __enter__(self) -> RunLog:
        lg = self.logger
        self.saved = (lg.level, lg.propagate, list(lg.handlers))
        self.outer_level = lg.getEffectiveLevel()  # what the caller's configuration let through
        for h in self.saved[2]:
            lg.removeHandler(h)
        lg.addHandler(self)
        lg.setLevel(logging.INFO)
        lg.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        lg = self.logger
        lg.removeHandler(self)
        level, propagate, handlers = self.saved
        for h in handlers:
            lg.addHandler(h)
        lg.setLevel(level)
        lg.propagate = propagate
        if self.file is not None:
            self.file.close()
        self.held.clear()

    def begin(self, log_file: Path, append: bool) -> None:
        """Start-up passed: open ``log_file`` (``append`` keeps a resumed run's log) and let the held
        messages out."""
        self.file = _file_handler(log_file, append)
        held, self.held = self.held, []
        for record in held:
            self.file.handle(record)
            if record.levelno < logging.WARNING:  # warnings were shown when they came
                self._show(record)

    def emit(self, record: logging.LogRecord) -> None:
        if self.file is None:
            self.held.append(record)
            if record.levelno >= logging.WARNING:
                self._show(record)
            return
        if record.levelno >= self.file.level:
            self.file.handle(record)
        self._show(record)

    def _show(self, record: logging.LogRecord) -> None:
        """``record`` to the handlers ``geoseg.unified`` had, and to the loggers above if they take it."""
        _, propagate, handlers = self.saved
        for h in handlers:
            if record.levelno >= h.level:
                h.handle(record)
        if propagate and record.levelno >= self.outer_level and self.logger.parent is not None:
            self.logger.parent.handle(record)
