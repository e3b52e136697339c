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


@pytest.fixture()
def systmp(tmp_path, monkeypatch) -> Path:
    import tempfile

    d = tmp_path / "systmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def test_folder_of_a_killed_server_is_removed_at_the_next_start(systmp, make_geotiff):
    killed, killed_url = _start_server(systmp)
    alive = None
    try:
        _upload(killed_url, make_geotiff("a.tif"))
        (dead_folder,) = _folders(systmp)
        assert (systmp / dead_folder / MARKER).is_file()
        alive, alive_url = _start_server(systmp)
        _upload(alive_url, make_geotiff("b.tif", seed=1))
        (live_folder,) = _folders(systmp) - {dead_folder}
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert _folders(systmp) == {dead_folder, live_folder}  # a kill -9 leaves the upload behind ...
        assert len(list((systmp / dead_folder).iterdir())) == 2  # (the upload and the marker)
        foreign = systmp / f"{PREFIX}not-ours"  # same name pattern, no marker: not a folder geoseg made
        foreign.mkdir()
        (foreign / "keep.txt").write_text("someone else's")

        with TestClient(create_app("classical")):  # ... and the next server's start removes it
            assert _folders(systmp) == {live_folder, foreign.name}
        assert (foreign / "keep.txt").read_text() == "someone else's"
        _upload(alive_url, make_geotiff("c.tif", seed=2))  # the running server still has its folder
        assert len(list((systmp / live_folder).iterdir())) == 3
    finally:
        for proc in (killed, alive):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert _folders(systmp) == {foreign.name}  # a normal stop removes its own folder


def test_a_live_folder_in_this_process_is_never_reaped(systmp):
    """The lock is per open file, not per process: a second server in the same process keeps its hands off."""
    up = UploadFolder()
    folder = up.path()
    (folder / "upload.tif").write_bytes(b"x")
    try:
        assert reap_stale_folders() == [] and folder.is_dir()
    finally:
        up.close()
    assert not folder.exists()
    linked = systmp / f"{PREFIX}link"
    target = systmp / "elsewhere"
    target.mkdir()
    (target / MARKER).write_text("1\n")
    linked.symlink_to(target, target_is_directory=True)
    assert reap_stale_folders() == [] and (target / MARKER).exists()  # a link is never followed
