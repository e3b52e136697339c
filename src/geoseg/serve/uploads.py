"""The folder uploads are kept in while their images are open, and the folders dead servers left behind.

By default each server keeps its uploads in a temporary folder of its own
(``geoseg-serve-*`` in the system's temporary directory), made on the first upload and
removed at shutdown. A server killed outright (``kill -9``, the OOM killer, a power cut)
never reaches its shutdown, so its folder and the uploads in it would stay forever.

Every such folder therefore holds a marker file that its server keeps locked for as long as
it runs (``flock``: the operating system drops the lock when the process ends, however it
ends, and a pid reused by another process holds no lock). At start a server removes the
``geoseg-serve-*`` folders whose marker it can lock: their owner is gone. A folder without
the marker is not one this program made (or is being made right now) and is left alone, as
are folders of other users and symbolic links.

A folder given by the operator (``create_app(upload_dir=...)``) is treated the same way: each
server keeps its uploads in a ``geoseg-serve-*`` subfolder of it, with the same locked marker,
and at start removes the subfolders there whose server is gone. The given folder itself, and
anything else in it, is never touched. The marker also names the host, and a folder made on
another host is never removed: a given folder may be a network share, where another machine's
lock is not always visible.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

PREFIX = "geoseg-serve-"
#: the marker a running server keeps locked inside its temporary upload folder
MARKER = ".geoseg-serve.lock"


def _try_lock(fh: IO[bytes]) -> bool:
    """Take an exclusive lock on ``fh`` without waiting; whether it was free."""
    try:
        import fcntl
    except ImportError:  # Windows: a byte-range lock, also released when its process ends
        import msvcrt

        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _ours(path: Path) -> bool:
    """A real folder (no link) of this user, holding a regular-file marker: one a geoseg server made."""
    try:
        if path.is_symlink() or not path.is_dir():
            return False
        marker = path / MARKER
        if marker.is_symlink() or not marker.is_file():
            return False
        return not hasattr(os, "getuid") or path.stat().st_uid == os.getuid()
    except OSError:
        return False


def _marker_text() -> str:
    """What a marker holds: the server's pid, then its host (read back by :func:`_owner`)."""
    return f"{os.getpid()}\n{socket.gethostname()}\n"


def _owner(text: str) -> tuple[str, str | None]:
    """``(pid, host)`` from a marker's text; the host is ``None`` in markers that name none."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else "?"), (lines[1] if len(lines) > 1 else None)


def reap_stale_folders(parent: str | os.PathLike | None = None) -> list[Path]:
    """Remove the ``geoseg-serve-*`` upload folders under ``parent`` (the temporary directory) whose server is gone.

    Returns the folders removed. A folder whose marker is locked belongs to a running server
    and is kept, as is one whose marker names another host; anything that cannot be checked
    is kept too.
    """
    root = Path(parent if parent is not None else tempfile.gettempdir())
    removed = []
    try:
        candidates = sorted(root.glob(PREFIX + "*"))
    except OSError:
        return removed
    for folder in candidates:
        if not _ours(folder):
            continue
        try:
            with open(folder / MARKER, "rb") as fh:
                if not _try_lock(fh):
                    continue  # its server is running
                owner, host = _owner(fh.read(512).decode("ascii", "replace"))
                if host is not None and host != socket.gethostname():
                    continue  # another machine's server (a shared folder): its lock may not be visible here
                shutil.rmtree(folder)  # while locked: a second server starting now skips it
        except FileNotFoundError:  # removed meanwhile (by its server, or another one starting)
            continue
        except OSError as exc:
            log.warning("could not remove the upload folder %s a stopped server left: %s", folder, exc)
            continue
        log.info("removed upload folder %s left by stopped server process %s", folder, owner)
        removed.append(folder)
    return removed


def check_upload_dir(given: str | os.PathLike) -> Path:
    """``given`` as an upload folder a server can use, checked before it listens; raises a one-line error if not.

    It must be a folder this process can write in, or not exist yet under one (it is made on the
    first upload, so a server that fails to start leaves nothing). Writing is tried for real (a
    temporary file, removed at once): permissions alone miss read-only mounts and ACLs.
    """
    from geoseg.errors import GeosegError, reason

    path = Path(given).expanduser()
    fix = "give --upload-dir a folder you can write in (it is made if missing), or leave it out to use a temporary one"
    probe = path
    while not probe.exists():  # the nearest existing folder: where the missing ones will be made
        if probe.is_symlink():
            raise GeosegError(f"the upload folder {str(given)!r} is a broken symbolic link", fix)
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "is a file, not a folder" if probe == path else f"is under {str(probe)!r}, which is not a folder"
        raise GeosegError(f"the upload folder {str(given)!r} {what}", fix)
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        where = "" if probe == path else f" (it would be made in {str(probe)!r})"
        raise GeosegError(f"cannot write in the upload folder {str(given)!r}{where}: {reason(exc)}", fix) from None
    return path


class UploadFolder:
    """Where a server keeps its uploads: a locked ``geoseg-serve-*`` folder of its own.

    It is made in ``given`` (made if missing, never removed) or else in the system's temporary
    directory, on first use (:meth:`path`), so a server that fails to start leaves nothing;
    :meth:`close` removes it (also at interpreter exit, in case the app is never shut down
    through its lifespan).
    """

    def __init__(self, given: str | os.PathLike | None = None) -> None:
        self.given = Path(given) if given else None
        self._dir: Path | None = None
        self._marker: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def parent(self) -> Path:
        """The folder this server's folder is made in (and stale ones are looked for)."""
        return self.given if self.given is not None else Path(tempfile.gettempdir())

    @property
    def current(self) -> Path | None:
        """The folder in use, ``None`` before the first upload (and after :meth:`close`)."""
        return self._dir

    def reap(self) -> list[Path]:
        """Remove the folders that servers which are gone left in :attr:`parent` (see :func:`reap_stale_folders`)."""
        return reap_stale_folders(self.parent)

    def path(self) -> Path:
        """The folder, made now if needed."""
        with self._lock:
            if self._dir is None:
                self._dir = self._make()
            return self._dir

    def _make(self) -> Path:
        if self.given is not None:
            self.given.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=PREFIX, dir=self.given))
        # locked under another name first, then renamed: the marker never exists unlocked, so a
        # server starting at this moment cannot take this folder for a dead one
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".lock-")
        fh = os.fdopen(fd, "w+b")
        _try_lock(fh)
        fh.write(_marker_text().encode())
        fh.flush()
        os.replace(tmp, d / MARKER)
        self._marker = fh
        atexit.register(self.close)
        return d

    def holds(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is a file directly in the folder (an upload this server may delete)."""
        d = self._dir
        return d is not None and Path(path).parent.resolve() == d.resolve()

    def close(self) -> None:
        """Remove this server's folder with everything in it (a given parent folder is kept)."""
        with self._lock:
            if self._dir is None:
                return
            if self._marker is not None:
                self._marker.close()  # Windows cannot remove an open file
                self._marker = None
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            atexit.unregister(self.close)
