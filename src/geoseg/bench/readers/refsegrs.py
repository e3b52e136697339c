"""RefSegRS: ``images/*.tif``, ``masks/*.tif`` (255 = target), ``output_phrase_{split}.txt``.

Each phrase-file line is ``<id> <expression>``; the image is ``images/<id>.tif`` and the
mask ``masks/<id>.tif`` (other image extensions are accepted). A line is one sample
(``<split>/<id>``, with ``#k`` appended when an id repeats).
"""

from __future__ import annotations

from pathlib import Path

from geoseg.bench.readers.common import find_image, lazy_mask, load_mask_file, load_rgb, naming, text_prompt
from geoseg.bench.sample import BenchSample
from geoseg.errors import InputError

NAME = "refsegrs"
DESCRIPTION = "RefSegRS (images/, masks/, output_phrase_{split}.txt)"


def detect(path: Path) -> bool:
    return path.is_dir() and any(path.glob("output_phrase_*.txt")) and (path / "masks").is_dir()


def read(path: Path, split: str | None = None) -> list[BenchSample]:
    files = sorted(path.glob(f"output_phrase_{split or '*'}.txt"))
    if not files:
        raise InputError(f"no output_phrase_{split or '*'}.txt in {path}", "give the RefSegRS root folder")
    samples = []
    for f in files:
        sp = f.stem.removeprefix("output_phrase_")
        seen: dict[str, int] = {}
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise InputError(f"{f} is not UTF-8 text ({exc})", "re-download the phrase file") from exc
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                raise InputError(f"line {n} of {f} is not '<id> <expression>': {line!r}", "repair the phrase file")
            iid, text = parts
            k = seen.get(iid, 0)
            seen[iid] = k + 1
            sid = f"{sp}/{iid}" + (f"#{k}" if k else "")
            with naming(sid, f):
                img = find_image(path, iid, ("images",))
                msk = find_image(path, iid, ("masks",))
            samples.append(BenchSample(
                sample_id=sid, task="referring", prompt=text_prompt(text, "referring"), image_key=str(img),
                load_image=lambda img=img: load_rgb(img),
                load_mask=lazy_mask(lambda msk=msk: load_mask_file(msk), img, sid, str(msk)),
                source_file=str(f), instruction=text,
            ))
    return samples
