"""How far each judge agrees with people: the human-labelled verses of
`../shared/data/poem-sentiment/` (positive, negative, no impact, mixed; Sheng and Uthus, 2020,
CC BY 4.0) through the three judges of `emoverse.judges`, each judge's valence read from its own
categories (the mapping is in `emoverse.judges`' docstring).

    .venv/bin/python bench/calibrate_judges.py [--data-dir ../shared/data/poem-sentiment]
                                               [--reference] [--cost N] [--json] [--write]

For the positive and the negative verses, per judge: how often it decides (valence not
`none`) and its accuracy where it decides, with 95% Wilson intervals; per split (train, dev)
and both. Also how often it says `none` on the verses people call "no impact". NADE's valence
margin is swept on the train split (the dev split is the check).

`--write`: also keep the figures over both splits in `emoverse/judges/calibration.json`,
which the family report prints beside the judges' figures.

`--reference`: NADE's mean and standard deviation per emotion over every poem of the shared
mirror (the constants of `emoverse.judges.nade`). `--cost N`: seconds per poem of each judge on
the first N poems of the mirror (NADE's load time apart).
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from emoverse.atomic import atomic_path  # noqa: E402
from emoverse.emotions import EMOTIONS  # noqa: E402
from emoverse.judges import CALIBRATION_FILE, JUDGES, judge_texts, nade  # noqa: E402
from emoverse.stats import Share  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "poem-sentiment"
HUMAN = {"-1": "negative", "0": "none", "1": "positive", "2": "mixed"}
SPLITS = ("train", "dev")


def read_verses(folder: Path, split: str) -> list[tuple[str, str]]:
    """(verse, human label) of a split's TSV: `id <TAB> verse <TAB> label`."""
    rows = []
    for line in (folder / f"{split}.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip():
            _, verse, label = line.split("\t")
            rows.append((verse, HUMAN[label.strip()]))
    return rows


def agreement(people: list[str], judged: list[str]) -> dict[str, Any]:
    """On the positive and negative verses: how often the judge decides, and how often it is
    right where it does; on the no-impact verses, how often it says none."""
    polar = [(p, j) for p, j in zip(people, judged, strict=True) if p in ("positive", "negative")]
    decided = [(p, j) for p, j in polar if j != "none"]
    calm = [j for p, j in zip(people, judged, strict=True) if p == "none"]
    return {
        "polar": len(polar),
        "decides": Share.of(len(decided), len(polar)).to_dict(),
        "accuracy": Share.of(sum(p == j for p, j in decided), len(decided)).to_dict(),
        "right_of_all": Share.of(sum(p == j for p, j in decided), len(polar)).to_dict(),
        "none_on_no_impact": Share.of(calm.count("none"), len(calm)).to_dict(),
    }


def calibrate(folder: Path) -> dict[str, Any]:
    """Every figure of the table, per split and over both."""
    splits = {split: read_verses(folder, split) for split in SPLITS}
    splits["both"] = splits["train"] + splits["dev"]
    out: dict[str, Any] = {"verses": {s: len(rows) for s, rows in splits.items()}}
    for split, rows in splits.items():
        texts, people = [v for v, _ in rows], [h for _, h in rows]
        judged = judge_texts(texts)
        out[split] = {j: agreement(people, judged[j].valences) for j in JUDGES}
        scores = judged["nade"].scores
        out[split]["nade_margins"] = {
            str(m): agreement(people, nade.valences_of(scores, m))
            for m in (0.0, 0.25, 0.5, 0.75, 1.0)
        }
    return out


def _cell(share: dict[str, Any]) -> str:
    return f"{share['share']:.1%} [{share['low']:.1%}, {share['high']:.1%}] of {share['n']}"


def table(result: dict[str, Any], split: str = "both") -> list[str]:
    """The markdown table for one split."""
    lines = [
        "| judge | decides (pos/neg verses) | accuracy where it decides | right of all pos/neg "
        "| none on no-impact |",
        "|---|---:|---:|---:|---:|",
    ]
    for judge in JUDGES:
        row = result[split][judge]
        lines.append(
            f"| {judge} | {_cell(row['decides'])} | {_cell(row['accuracy'])} "
            f"| {_cell(row['right_of_all'])} | {_cell(row['none_on_no_impact'])} |"
        )
    return lines


def reference() -> dict[str, Any]:
    from bench.tag import DEFAULT_MIRROR, mirror_poems

    texts = mirror_poems(DEFAULT_MIRROR).column("text").to_pylist()
    scores = nade.intensities(texts)
    return {
        "poems": len(texts),
        "mean": dict(zip(EMOTIONS, scores.mean(axis=0).round(4).tolist(), strict=True)),
        "std": dict(zip(EMOTIONS, scores.std(axis=0).round(4).tolist(), strict=True)),
    }


def cost(n: int) -> dict[str, Any]:
    """Seconds per poem of each judge on the mirror's first n poems, and NADE's load."""
    from bench.tag import DEFAULT_MIRROR, mirror_poems

    texts = mirror_poems(DEFAULT_MIRROR).column("text").to_pylist()[:n]
    start = time.perf_counter()
    nade.load_nade()
    out: dict[str, Any] = {"poems": len(texts), "nade_load_s": time.perf_counter() - start}
    out["mean_chars"] = sum(map(len, texts)) / len(texts)
    for judge in JUDGES:
        judge_texts(texts[:8], [judge])  # warm: lexicons loaded
        start = time.perf_counter()
        judge_texts(texts, [judge])
        out[f"{judge}_ms_per_poem"] = 1000 * (time.perf_counter() - start) / len(texts)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--cost", type=int, default=0, metavar="N")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.reference:
        print(json.dumps(reference(), indent=2))
        return 0
    if args.cost:
        print(json.dumps(cost(args.cost), indent=2))
        return 0
    result = calibrate(args.data_dir)
    if args.write:
        kept = {
            "data": "poem-sentiment (Sheng and Uthus, 2020; CC BY 4.0), train and dev splits",
            "command": "bench/calibrate_judges.py --write",
            "verses": result["verses"]["both"],
            "judges": {j: result["both"][j] for j in JUDGES},
            "nade_valence_margin": nade.VALENCE_MARGIN,
        }
        with atomic_path(CALIBRATION_FILE) as tmp:
            tmp.write_text(json.dumps(kept, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"verses: {result['verses']}")
    for split in ("both", *SPLITS):
        print(f"\n{split}:")
        print("\n".join(table(result, split)))
    print("\nNADE valence margin (standard deviations), train then dev:")
    print("| margin | split | decides | accuracy |")
    print("|---:|---|---:|---:|")
    for split in SPLITS:
        for margin, row in result[split]["nade_margins"].items():
            print(f"| {margin} | {split} | {_cell(row['decides'])} | {_cell(row['accuracy'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
