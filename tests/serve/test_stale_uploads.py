"""A server killed with SIGKILL cannot remove its upload folder: the next server to start does, and only that one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from geoseg.serve import create_app  # noqa: E402
from geoseg.serve.uploads import MARKER, PREFIX, UploadFolder, reap_stale_folders  # noqa: E402

from .conftest import free_port  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def _start_server(tmpdir: Path) -> tuple[subprocess.Popen, str]:
    """``geoseg serve`` in its own process, with ``tmpdir`` as its temporary directory; (process, URL)."""
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen([sys.executable, "-m", "geoseg.cli", "-q", "serve", "--backend", "classical",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"geoseg serve exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("geoseg serve did not start")


def _upload(url: str, path: Path) -> None:
    with open(path, "rb") as fh:
        r = httpx.post(url + "/api/images", files={"file": (path.name, fh, "image/tiff")}, timeout=60)
    assert r.status_code == 201, r.text


def _folders(tmpdir: Path) -> set[str]:
    return {p.name for p in tmpdir.iterdir() if p.name.startswith(PREFIX)}


def test_folder_of_a_killed_server_is_removed_at_the_next_start(private_tmp, make_geotiff):
    killed, killed_url = _start_server(private_tmp)
    alive = None
    try:
        _upload(killed_url, make_geotiff("a.tif"))
        (dead_folder,) = _folders(private_tmp)
        assert (private_tmp / dead_folder / MARKER).is_file()
        alive, alive_url = _start_server(private_tmp)
        _upload(alive_url, make_geotiff("b.tif", seed=1))
        (live_folder,) = _folders(private_tmp) - {dead_folder}
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert _folders(private_tmp) == {dead_folder, live_folder}  # a kill -9 leaves the upload behind ...
        assert len(list((private_tmp / dead_folder).iterdir())) == 2  # (the upload and the marker)
        foreign = private_tmp / f"{PREFIX}not-ours"  # same name pattern, no marker: not a folder geoseg made
        foreign.mkdir()
        (foreign / "keep.txt").write_text("someone else's")

        with TestClient(create_app("classical")):  # ... and the next server's start removes it
            assert _folders(private_tmp) == {live_folder, foreign.name}
        assert (foreign / "keep.txt").read_text() == "someone else's"
        _upload(alive_url, make_geotiff("c.tif", seed=2))  # the running server still has its folder
        assert len(list((private_tmp / live_folder).iterdir())) == 3
    finally:
        for proc in (killed, alive):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert _folders(private_tmp) == {foreign.name}  # a normal stop removes its own folder


def test_a_live_folder_in_this_process_is_never_reaped(private_tmp):
    """The lock is per open file, not per process: a second server in the same process keeps its hands off."""
    up = UploadFolder()
    folder = up.path()
    (folder / "upload.tif").write_bytes(b"x")
    try:
        assert reap_stale_folders() == [] and folder.is_dir()
    finally:
        up.close()
    assert not folder.exists()
    linked = private_tmp / f"{PREFIX}link"
    target = private_tmp / "elsewhere"
    target.mkdir()
    (target / MARKER).write_text("1\n")
    linked.symlink_to(target, target_is_directory=True)
    assert reap_stale_folders() == [] and (target / MARKER).exists()  # a link is never followed


def _killed_server_folder(parent: Path) -> Path:
    """A process that makes its upload folder in ``parent``, writes an upload and dies of SIGKILL; its folder."""
    code = ("import os, signal, sys\n"
            "from geoseg.serve.uploads import UploadFolder\n"
            "d = UploadFolder(sys.argv[1]).path()\n"
            "(d / 'upload.tif').write_bytes(b'II*\\x00')\n"
            "print(d, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(parent)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return Path(proc.stdout.strip())


def test_given_upload_folder_keeps_no_upload_of_a_killed_server(tmp_path, make_geotiff):
    given = tmp_path / "uploads"
    dead = _killed_server_folder(given)
    assert dead.parent == given and (dead / "upload.tif").is_file()  # a kill -9 leaves the upload behind ...
    (given / "notes.txt").write_text("the operator's")  # the given folder may hold other things: never touched
    foreign = given / f"{PREFIX}other-host"  # a dead server's folder, but on another machine sharing the folder
    foreign.mkdir()
    (foreign / MARKER).write_text("1\nsome-other-host\n")
    live = UploadFolder(given)  # a running server in this process
    (live.path() / "live.tif").write_bytes(b"x")
    try:
        with TestClient(create_app("classical", upload_dir=given)) as c:  # ... and the next start removes it
            assert not dead.exists()
            assert (given / "notes.txt").read_text() == "the operator's"
            assert foreign.is_dir() and (live.path() / "live.tif").is_file()
            with open(make_geotiff(), "rb") as fh:
                assert c.post("/api/images", files={"file": ("a.tif", fh, "image/tiff")}).status_code == 201
            (mine,) = _folders(given) - {foreign.name, live.path().name}
            assert len(list((given / mine).iterdir())) == 2  # (the upload and the marker)
        assert not (given / mine).exists() and given.is_dir()  # a normal stop removes its folder, not the given one
    finally:
        live.close()
    assert sorted(p.name for p in given.iterdir()) == [foreign.name, "notes.txt"]
