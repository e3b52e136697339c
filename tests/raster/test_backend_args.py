"""--device and --checkpoint are checked before any model loads, for every backend.

Before: an unknown or missing device made the default model fail to load and the run fell back
to the classical backend with a warning (exit 0, a mask the user did not ask for), and a
``--checkpoint`` given to the classical backend was ignored.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geoseg.device import resolve_device
from geoseg.errors import GeosegError

from .conftest import roof_box
from .test_cli_segment import box_arg, run_cli

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.parametrize(("args", "words"), [
    (["--device", "tpu"], "error: unknown device 'tpu' (use --device auto, cpu, cuda or cuda:N)"),
    pytest.param(["--device", "cuda"], "error: --device cuda was asked for but no CUDA GPU is available",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU")),
    (["--backend", "classical", "--checkpoint", "{scene}"], "error: the classical backend loads no weights"),
    (["--checkpoint", "{missing}"], "does not exist (check the --checkpoint path)"),
])
def test_unusable_device_or_checkpoint_is_one_line(utm_scene: Path, tmp_path: Path, capsys, args, words) -> None:
    args = [a.format(scene=utm_scene, missing=tmp_path / "none.pt") for a in args]
    out = tmp_path / "out" / "m.tif"
    rc, stdout, err = run_cli(["-q", "segment", str(utm_scene), "--box", box_arg(roof_box(0)), "-o", str(out), *args],
                              capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words.split(" (")[0] in lines[0], err
    assert "classical backend for point/box" not in stdout + err
    assert not out.exists()


def test_resolve_device_names_what_is_wrong() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(GeosegError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(GeosegError, match="'meta' is not supported"):
        resolve_device("meta")
    if NO_CUDA:
        with pytest.raises(GeosegError, match="cuda:3 was asked for but no CUDA GPU"):
            resolve_device("cuda:3")
    else:
        with pytest.raises(GeosegError, match="cuda:99 was asked for but this machine has"):
            resolve_device("cuda:99")
