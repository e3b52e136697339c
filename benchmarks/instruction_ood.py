"""Calibrate and measure the unified model's check for instructions unlike its training ones.

``geoseg segment --text`` notes an instruction whose MiniLM sentence embedding is farther than
``UNFAMILIAR_DISTANCE`` (``1 - max cosine``) from the reference instructions the data engine's
wording gives for the checkpoint's classes (:mod:`geoseg.unified.instruction_check`). This script,
with the shipped model:

1. times building the reference set (the first-use cost; the encoder is loaded first);
2. measures every referring/reasoning row of the validation split (``tile_6`` rows of the default
   build) and proposes the threshold: the smallest step of 0.01 that flags at most 1 % of them;
3. reports, at the threshold in the code, the share flagged of the held-out ``tile_7`` rows
   (``test`` split, never used in training or selection: should be about 1 %), of hand-written
   out-of-distribution sets (translations of typical instructions into French, German, Spanish,
   Chinese and Arabic; objects outside the five classes; gibberish) and of English synonyms
   (which may or may not work), and a sweep over nearby thresholds;
4. with the Dubai images at hand, runs the model on the nine ``tile_6`` images for a few texts per
   class and prints the IoU of each answer with the class's labelled pixels (mean over the images
   where the class covers at least 5 %), next to the text's distance: whether a flagged text was
   answered sensibly anyway.

    .venv/bin/geoseg data build --config configs/data/dubai.yaml -o data/shards/dubai --workers 2
    .venv/bin/python benchmarks/instruction_ood.py [--shards data/shards/dubai] [--dubai DIR] [--no-model]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DUBAI = ROOT.parent / "shared" / "data" / "dubai"
#: the share of validation rows the threshold may flag
VAL_SHARE = 0.01
SWEEP = (0.22, 0.24, 0.26, 0.28, 0.30, 0.32, 0.34)

#: typical instructions (class names, level-2 and reasoning wording) translated, objects outside the
#: classes, and nonsense: none is English about land, water, building, vegetation or road
OOD: dict[str, list[str]] = {
    "french": ["l'eau", "les bâtiments", "la route", "la végétation", "le terrain nu", "les arbres",
               "le plus grand bâtiment en haut à gauche", "Où un bateau pourrait-il naviguer ?", "segmente les routes",
               "trouve la plus grande étendue d'eau", "Où les gens vivent-ils ?", "la zone de végétation à droite",
               "les routes à côté des bâtiments", "Montre-moi l'eau.", "le petit bâtiment au centre"],
    "german": ["das Wasser", "die Gebäude", "die Straße", "die Vegetation", "das unbebaute Land", "die Bäume",
               "das größte Gebäude oben links", "Wo könnte ein Boot fahren?", "segmentiere die Straßen",
               "finde die größte Wasserfläche", "Wo wohnen Menschen?", "die Vegetationsfläche auf der rechten Seite",
               "die Straßen neben den Gebäuden", "Zeig mir das Wasser.", "das kleine Gebäude in der Mitte"],
    "spanish": ["el agua", "los edificios", "la carretera", "la vegetación", "el terreno sin pavimentar",
                "los árboles", "el edificio más grande arriba a la izquierda", "¿Dónde podría navegar un barco?",
                "segmenta las carreteras", "encuentra la mayor masa de agua", "¿Dónde vive la gente?",
                "la zona de vegetación a la derecha", "las carreteras junto a los edificios", "Muéstrame el agua.",
                "el edificio pequeño en el centro"],
    "chinese": ["水", "建筑物", "道路", "植被", "未铺砌的土地", "树木", "左上角最大的建筑物", "船可以在哪里航行？",
                "分割道路", "找到最大的水体", "人们住在哪里？", "右边的植被区域", "建筑物旁边的道路", "给我看水。",
                "中间的小建筑"],
    "arabic": ["الماء", "المباني", "الطريق", "الغطاء النباتي", "الأرض غير المعبدة", "الأشجار",
               "أكبر مبنى في الزاوية العلوية اليسرى", "أين يمكن أن يبحر قارب؟", "قسّم الطرق", "أوجد أكبر مسطح مائي",
               "أين يعيش الناس؟", "منطقة النباتات على اليمين", "الطرق بجانب المباني", "أرني الماء.",
               "المبنى الصغير في الوسط"],
    "objects": ["cars", "solar panels", "ships", "airplanes", "swimming pools", "tennis courts", "the parked cars",
                "people", "a dog", "clouds", "the cranes", "shipping containers", "the airport runway",
                "wind turbines", "the football stadium", "the red car", "boats in the harbor", "the largest ship",
                "the solar panels on the roofs", "count the cars in the parking lot"],
    "gibberish": ["asdkjh qwe", "xyzzy", "lorem ipsum dolor sit amet", "blorf the snarg", "??", "123 456",
                  "qwertyuiop", "zzzz", "the the the", "fjdk slaq pweo", "hello", "banana", "ok", "ÄÖÜ ßß", "!!!",
                  "kjhg jhgf", "mnbvcx", "a", "test", "foo bar baz"],
}
#: English words for the classes that the training instructions never use
SYNONYMS = ["trees", "the sea", "houses", "the lake", "grass", "streets", "sand", "the desert", "the buildings",
            "roads", "the river", "parks", "highways", "greenery", "bare ground", "all the water", "the coastline",
            "the tallest tower", "the beach", "the parking lot", "the biggest house", "palm trees", "the canal",
            "open land", "the main road"]
#: texts run on the tile_6 images, by the class (index into the Dubai classes) whose pixels they should find
MODEL_TEXTS: dict[int, list[str]] = {
    0: ["the area of unpaved land", "land", "open land", "sand", "bare ground", "das unbebaute Land", "le terrain nu"],
    1: ["the body of water", "water", "the sea", "all the water", "the lake", "the river", "boats in the harbor",
        "l'eau", "das Wasser", "el agua", "水"],
    2: ["the building", "buildings", "houses", "the biggest house", "les bâtiments", "die Gebäude", "建筑物"],
    3: ["the patch of vegetation", "vegetation", "trees", "grass", "greenery", "la végétation", "die Vegetation",
        "die Bäume"],
    4: ["the road", "roads", "streets", "highways", "la route", "die Straße", "道路"],
}


def text_rows(shards: Path, split: str) -> list[str]:
    """The instruction of every referring / reasoning row of ``split`` (one per row, repeats kept)."""
    from geoseg.unified.data import load_rows

    return [r["instruction"] for r in load_rows(shards, split) if r["task"] != "interactive"]


def distances(seg, texts: Sequence[str], chunk: int = 2048) -> np.ndarray:
    """``seg.instruction_distance`` of every text; distinct texts are encoded in batches first."""
    from geoseg.prompts import Prompt
    from geoseg.unified.text_encoder import canonical_instruction

    distinct = list(dict.fromkeys(texts))
    found: dict[str, float] = {}
    for i in range(0, len(distinct), chunk):  # batched encoding; the cache then answers instruction_distance
        part = distinct[i:i + chunk]
        seg.text.encode([canonical_instruction(t, False) for t in part])
        found.update({t: seg.instruction_distance(Prompt(text=t))[0] for t in part})
    return np.array([found[t] for t in texts])


def proposed_threshold(val: np.ndarray, share: float = VAL_SHARE) -> float:
    """The smallest multiple of 0.01 above which at most ``share`` of ``val`` lies."""
    thr = math.floor(float(np.quantile(val, 1.0 - share)) * 100) / 100
    while np.mean(val > thr) > share:
        thr = round(thr + 0.01, 2)
    return thr


def report_sets(seg, threshold: float) -> dict[str, np.ndarray]:
    """Distances of the hand-written sets, and a line per set: share flagged, median, the unflagged texts."""
    sets = {**OOD, "synonyms (English)": SYNONYMS}
    out = {}
    print(f"\nhand-written sets at threshold {threshold:.2f}:")
    print(f"  {'set':20s} {'n':>3s} {'flagged':>8s} {'median d':>9s}  not flagged")
    for name, texts in sets.items():
        d = distances(seg, texts)
        out[name] = d
        missed = ", ".join(f"{t!r} {x:.2f}" for t, x in zip(texts, d) if x <= threshold)
        print(f"  {name:20s} {len(texts):3d} {np.mean(d > threshold):8.0%} {np.median(d):9.2f}  {missed}")
    return out


def model_check(seg, dubai: Path, threshold: float) -> None:
    """IoU of the model's answer with the intended class on the tile_6 images, next to each text's distance."""
    import cv2

    from geoseg.data.sources.dubai import PALETTE, palette_to_classes
    from geoseg.prompts import Prompt

    images = sorted((dubai / "tile_6" / "images").glob("*.jpg"))
    scores: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for path in images:
        rgb = np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])
        mask = cv2.imread(str(path.parent.parent / "masks" / f"{path.stem}.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
        classes, _ = palette_to_classes(np.ascontiguousarray(mask), PALETTE, unknown="unlabeled")
        seg.set_image(rgb)
        for cls, texts in MODEL_TEXTS.items():
            truth = classes == cls
            if truth.mean() < 0.05:
                continue
            for text in texts:
                pred = seg.predict(Prompt(text=text))
                union = (pred.mask | truth).sum()
                scores.setdefault((cls, text), []).append((float((pred.mask & truth).sum() / union), pred.score))
    print(f"\nthe model on the {len(images)} tile_6 images (class IoU: mean over the images where the class "
          f"covers >= 5 %):")
    print(f"  {'class':10s} {'text':28s} {'images':>6s} {'IoU':>5s} {'presence':>8s} {'distance':>8s} flagged")
    for (cls, text), v in scores.items():
        arr = np.array(v)
        d = distances(seg, [text])[0]
        print(f"  {seg.cfg.classes[cls]:10s} {text:28s} {len(v):6d} {arr[:, 0].mean():5.2f} {arr[:, 1].mean():8.2f} "
              f"{d:8.2f} {'yes' if d > threshold else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=Path, default=ROOT / "data" / "shards" / "dubai",
                    help="the default Dubai build (validation = tile_6, test = tile_7)")
    ap.add_argument("--dubai", type=Path, default=DUBAI, help="the Dubai images, for the model check")
    ap.add_argument("--no-model", action="store_true", help="skip running the model on the tile_6 images")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    from geoseg.prompts import Prompt
    from geoseg.unified import instruction_check as ic
    from geoseg.unified.segmenter import UnifiedSegmenter

    seg = UnifiedSegmenter(device="cpu", threads=2)
    t0 = time.perf_counter()
    seg.check_prompt(Prompt(text="the water"))  # what a run does first: load the encoder, encode the text
    t_text = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = ic.reference_for(seg.text, seg.cfg.classes)
    cost = time.perf_counter() - t0
    print(f"reference: {len(ref.texts)} instructions about {', '.join(ref.classes)}; built and encoded in "
          f"{cost:.2f} s ({ref.vectors.numel() * 4 / 2**20:.2f} MiB), once per process (loading the encoder and "
          f"encoding the first text before it: {t_text:.2f} s)")

    val = distances(seg, text_rows(args.shards, "val"))
    test = distances(seg, text_rows(args.shards, "test"))
    shipped = ic.UNFAMILIAR_DISTANCE
    proposed = proposed_threshold(val)
    print(f"validation (tile_6) referring/reasoning rows: {len(val)}; distance median {np.median(val):.3f}, "
          f"99th percentile {np.quantile(val, 0.99):.3f}, max {val.max():.3f}")
    print(f"proposed threshold (<= {VAL_SHARE:.0%} of validation rows flagged): {proposed:.2f}; in the code: "
          f"{shipped:.2f}")
    print(f"at {shipped:.2f}: validation flagged {np.mean(val > shipped):.2%} ({int((val > shipped).sum())} rows), "
          f"held-out tile_7 flagged {np.mean(test > shipped):.2%} of {len(test)} rows "
          f"(99th percentile {np.quantile(test, 0.99):.3f})")
    sets = report_sets(seg, shipped)
    ood = np.concatenate([d for name, d in sets.items() if name in OOD])
    print("\nsweep:  threshold  validation  tile_7  out-of-distribution (all sets)  English synonyms")
    for thr in SWEEP:
        print(f"        {thr:9.2f}  {np.mean(val > thr):10.2%}  {np.mean(test > thr):6.2%}  "
              f"{np.mean(ood > thr):30.0%}  {np.mean(sets['synonyms (English)'] > thr):16.0%}")
    if not args.no_model:
        if (args.dubai / "tile_6" / "images").is_dir():
            model_check(seg, args.dubai, shipped)
        else:
            print(f"\nno model check: {args.dubai}/tile_6/images not found (give --dubai)")


if __name__ == "__main__":
    main()
