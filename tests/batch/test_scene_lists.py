"""Scene list files as users write them: CSV with a header and extra columns, spreadsheet exports, odd names."""

from __future__ import annotations

import json

import pytest

from geoseg.batch import expand_scenes
from geoseg.cli import main
from geoseg.errors import InputError

from .conftest import write_scene


def _names(paths) -> list[str]:
    return [p.name for p in paths]


@pytest.fixture()
def three(tmp_path):
    d = tmp_path / "scenes"
    d.mkdir()
    return [write_scene(d / name, width=200, height=150, seed=i) for i, name in enumerate(["a.tif", "b.tif", "c d.tif"])]


def test_csv_header_names_the_path_column_and_other_columns_are_ignored(tmp_path, three):
    lst = tmp_path / "scenes.csv"
    lst.write_text('date,path,cloud_cover\n2024-01-01,scenes/b.tif,3\n2024-02-01,"scenes/c d.tif",12\n')
    assert _names(expand_scenes(lst)) == ["b.tif", "c d.tif"]
    # gdaltindex's field name, any case, a spreadsheet's byte-order mark and CRLF line ends, a blank row
    lst.write_bytes(b'\xef\xbb\xbfid,Location\r\n1,scenes/a.tif\r\n,\r\n2,scenes/b.tif\r\n')
    assert _names(expand_scenes(lst)) == ["a.tif", "b.tif"]


def test_csv_without_header_takes_the_first_column(tmp_path, three):
    lst = tmp_path / "scenes.csv"
    lst.write_text(f"scenes/a.tif,2024-01-01\n# left out\n{three[2]},2024-02-01\n")
    assert _names(expand_scenes(lst)) == ["a.tif", "c d.tif"]


def test_csv_whose_first_row_is_neither_a_scene_nor_a_known_header_is_refused(tmp_path, three):
    lst = tmp_path / "scenes.csv"
    lst.write_text("name,acquired\nscenes/a.tif,2024-01-01\n")
    with pytest.raises(InputError, match=r"first row of .*scenes.csv \(name,acquired\) is neither a scene nor a header"):
        expand_scenes(lst)
    lst.write_text("path,acquired\nscenes/a.tif,2024-01-01\n,2024-02-01\n")
    with pytest.raises(InputError, match="row 3 of .* has no scene path"):
        expand_scenes(lst)


def test_text_list_keeps_a_hash_inside_a_name(tmp_path):
    d = tmp_path / "scenes"
    d.mkdir()
    write_scene(d / "run#2.tif", width=200, height=150)
    lst = tmp_path / "scenes.txt"
    lst.write_text("# my scenes\nscenes/run#2.tif  # the second pass\n")
    assert _names(expand_scenes(lst)) == ["run#2.tif"]


def test_csv_list_through_the_cli(tmp_path, three, capsys):
    lst = tmp_path / "scenes.csv"
    lst.write_text("scene_id,path\nA,scenes/a.tif\nB,scenes/b.tif\n")
    try:
        main(["-q", "segment", str(lst), "--box", "140,60,190,140", "--backend", "classical", "-o",
              str(tmp_path / "out"), "--workers", "0", "--json"])
    except SystemExit as exc:
        assert not exc.code
    summary = json.loads(capsys.readouterr().out)
    assert summary["done"] == 2 and [s["scene"].rsplit("/", 1)[-1] for s in summary["scenes"]] == ["a.tif", "b.tif"]
