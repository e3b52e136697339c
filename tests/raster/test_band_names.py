"""Default bands chosen by band names: a stack whose descriptions name red, green and blue but that
declares no colour interpretation (a Sentinel-2 export "B2 Blue", "B3 Green", "B4 Red", "B8 NIR") was
read as bands 1,2,3: blue shown as red, with a note telling the user to fix it by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import geoseg
from geoseg.cli import cli
from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter

from .conftest import ROOFS, roof_box, roof_mask, write_geotiff

S2_NAMES = ("B2 Blue", "B3 Green", "B4 Red", "B5 Red Edge 1", "B8 NIR", "B11 SWIR 1")


class RedSegmenter(Segmenter):
    """Marks the pixels whose display red is bright: which band was shown as red decides the answer."""

    name = "red"
    capabilities = frozenset({"box", "point"})

    def _set_image(self, image: np.ndarray) -> None:
        self._red = image[:, :, 0]

    def _predict(self, prompt: Prompt) -> Prediction:
        return Prediction(self._red > 128, 0.9)


def named_stack(path: Path, names=S2_NAMES, red_band: int = 3, **extra) -> Path:
    """A uint8 stack (no stretch: pixels are shown as stored) where only band ``red_band`` is bright on roof 0."""
    rng = np.random.default_rng(7)
    data = (20 + rng.random((len(names), 280, 320)) * 20).astype(np.uint8)
    r0, r1, c0, c1 = ROOFS[0]
    data[red_band - 1, r0:r1, c0:c1] = 220
    write_geotiff(path, data, photometric=extra.pop("photometric", "minisblack"), **extra)
    with rasterio.open(path, "r+") as ds:
        for i, name in enumerate(names, start=1):
            ds.set_band_description(i, name)
    return path


def _input_bands(mask: Path) -> list[int]:
    with rasterio.open(mask) as ds:
        return json.loads(ds.tags()["provenance_json"])["input"]["bands"]


@pytest.mark.parametrize(("names", "expected"), [
    (S2_NAMES, (3, 2, 1)),  # the red edge band does not count as red
    (("blue", "green", "red", "nir"), (3, 2, 1)),
    (("Red", "Green", "Blue"), (1, 2, 3)),
    (("Blue (B2)", "Green (B3)", "Red (B4)", "Vegetation red-edge", "NIR", "Shortwave infrared"), (3, 2, 1)),
    (("coastal_blue", "blue", "green_i", "green", "yellow", "red", "rededge", "nir"), (6, 4, 2)),  # PlanetScope
    (("Coastal blue", "Blue", "Green", "Red"), None),  # two bands say blue: no sure choice
    (("B2", "B3", "B4", "B8"), None),  # band codes differ between sensors: not read as colours
    (("red", "green", "", ""), None),
    (("", "", ""), None),
])
def test_band_names_that_identify_red_green_blue(names, expected) -> None:
    from geoseg.raster.io import named_rgb

    assert named_rgb(names) == expected


def test_a_named_stack_is_read_in_true_colour_and_says_so(tmp_path: Path) -> None:
    """Bands 3,2,1 by their names: the answer that needs red is found, provenance and the note say how."""
    path = named_stack(tmp_path / "s2.tif")
    res = geoseg.segment(path, output=tmp_path / "m.tif", boxes=[roof_box()], segmenter=RedSegmenter())
    with rasterio.open(tmp_path / "m.tif") as ds:
        found = ds.read(1) == 1
    assert (found & roof_mask()).sum() > 0.95 * roof_mask().sum()
    assert _input_bands(tmp_path / "m.tif") == [3, 2, 1]
    note = [n for n in res.notes if "as R,G,B" in n]
    assert len(note) == 1 and "read bands 3,2,1 of s2.tif (6 bands: 1=B2 Blue" in note[0]
    assert "chosen by their band names" in note[0] and "4=B5 Red Edge 1" in note[0]


def test_colour_interpretation_then_names_then_file_order(tmp_path: Path) -> None:
    """Declared colours win over names (no note: nothing was guessed); names win over 1,2,3; 3-band files too."""
    declared = named_stack(tmp_path / "declared.tif", names=("blue", "green", "red"), red_band=1, photometric="RGB")
    res = geoseg.segment(declared, output=tmp_path / "d.tif", boxes=[roof_box()], segmenter=RedSegmenter())
    assert _input_bands(tmp_path / "d.tif") == [1, 2, 3] and res.mask_pixels > 0 and not res.notes

    three = named_stack(tmp_path / "bgr.tif", names=("blue", "green", "red"), red_band=3)
    res = geoseg.segment(three, output=tmp_path / "t.tif", boxes=[roof_box()], segmenter=RedSegmenter())
    assert _input_bands(tmp_path / "t.tif") == [3, 2, 1] and res.mask_pixels > 0
    assert any("chosen by their band names" in n for n in res.notes)

    ambiguous = named_stack(tmp_path / "amb.tif", names=("Coastal blue", "Blue", "Green", "Red"), red_band=4)
    res = geoseg.segment(ambiguous, output=tmp_path / "a.tif", boxes=[roof_box()], segmenter=RedSegmenter())
    assert _input_bands(tmp_path / "a.tif") == [1, 2, 3] and res.mask_pixels == 0
    assert any("give --bands R,G,B to choose" in n for n in res.notes)


def test_the_cli_reads_a_named_stack_by_its_names_and_bands_still_win(tmp_path: Path) -> None:
    path = named_stack(tmp_path / "s2.tif")
    box = ",".join(str(v) for v in roof_box())
    runner = CliRunner()
    res = runner.invoke(cli, ["-q", "segment", str(path), "--box", box, "--backend", "classical",
                              "-o", str(tmp_path / "m.tif"), "--json"])
    assert res.exit_code == 0, res.output
    assert any("chosen by their band names" in n for n in json.loads(res.stdout)["notes"])
    assert _input_bands(tmp_path / "m.tif") == [3, 2, 1]

    res = runner.invoke(cli, ["-q", "segment", str(path), "--box", box, "--backend", "classical", "--bands", "1,2,3",
                              "-o", str(tmp_path / "given.tif"), "--json"])
    assert res.exit_code == 0, res.output
    assert not any("as R,G,B" in n for n in json.loads(res.stdout)["notes"])
    assert _input_bands(tmp_path / "given.tif") == [1, 2, 3]


def test_the_note_warns_only_when_the_bands_were_a_guess(tmp_path: Path, caplog) -> None:
    """Bands chosen by their names are right: the note is for information; 1,2,3 of an unnamed stack is a guess."""
    import logging

    named = named_stack(tmp_path / "named.tif")
    unnamed = named_stack(tmp_path / "unnamed.tif", names=("", "", "", "", "", ""))
    levels = {}
    for path in (named, unnamed):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="geoseg.notes"):
            geoseg.segment(path, output=tmp_path / f"{path.stem}_m.tif", boxes=[roof_box()], segmenter=RedSegmenter())
        levels[path.stem] = [r.levelno for r in caplog.records if "as R,G,B" in r.getMessage()]
    assert levels == {"named": [logging.INFO], "unnamed": [logging.WARNING]}
