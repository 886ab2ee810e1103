"""How often the judges agree on real poems: the NRC lexicon (the partitions' labels) against
Empath's eight Plutchik categories, over every poem of the shared mirror, and against NADE
(`emoverse.judges.nade`, its own label rule), over every poem or a seeded sample.

    .venv/bin/python bench/judges.py [--mirror-dir ../shared/gutenberg] [--nade-sample N]

A model's fidelity under Empath or NADE should be read against this: a child that wrote poems
exactly like its partition's would score about the agreement on that label, not 1.
"""

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.tag import DEFAULT_MIRROR, mirror_poems  # noqa: E402
from emoverse.emotions import LABELS  # noqa: E402
from emoverse.judges import agreement_with_nrc  # noqa: E402
from emoverse.tagging import tag_table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror-dir", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument(
        "--nade-sample", type=int, default=None, metavar="N",
        help="judge a seeded sample of N poems with NADE (default: every poem)",
    )  # fmt: skip
    args = parser.parse_args()
    tagged = tag_table(mirror_poems(args.mirror_dir))
    texts, labels = tagged.column("text").to_pylist(), tagged.column("label").to_pylist()
    results = {}
    for judge, sample in (("empath", None), ("nade", args.nade_sample)):
        start = time.perf_counter()
        results[judge] = agreement_with_nrc(texts, labels, judge, sample=sample)
        result = results[judge]
        print(
            f"{judge}: on {result['poems']:,} of {result['of_poems']:,} poems, gives the NRC "
            f"label to {result['agreement']:.1%} (Cohen's kappa {result['kappa']:.2f}); on the "
            f"{result['emotional_poems']:,} poems NRC gives an emotion, "
            f"{result['agreement_on_emotional']:.1%}; finds no emotion (neutral) in "
            f"{result['judged_neutral']:.1%} ({time.perf_counter() - start:.0f} s)"
        )
    print()
    print("| NRC label | poems | Empath agrees | NADE poems | NADE agrees |")
    print("|---|---:|---:|---:|---:|")
    for label in LABELS:
        row, nade = results["empath"]["per_label"][label], results["nade"]["per_label"][label]
        share = row["agrees"] / row["poems"] if row["poems"] else 0.0
        nade_share = nade["agrees"] / nade["poems"] if nade["poems"] else 0.0
        print(
            f"| {label} | {row['poems']:,} | {share:.1%} | {nade['poems']:,} | {nade_share:.1%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
