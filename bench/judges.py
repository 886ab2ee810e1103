"""How often the two judges agree on real poems: the NRC lexicon (the partitions' labels) and
Empath's eight Plutchik categories, over every poem of the shared mirror.

    .venv/bin/python bench/judges.py [--mirror-dir ../shared/gutenberg]

A model's fidelity under Empath should be read against this: a child that wrote poems exactly
like its partition's would score about the agreement on that label, not 1.
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.tag import DEFAULT_MIRROR, mirror_poems  # noqa: E402
from emoverse.emotions import LABELS  # noqa: E402
from emoverse.tagging import judge_agreement, tag_table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror-dir", type=Path, default=DEFAULT_MIRROR)
    args = parser.parse_args()
    tagged = tag_table(mirror_poems(args.mirror_dir))
    result = judge_agreement(
        tagged.column("text").to_pylist(), tagged.column("label").to_pylist()
    )
    print(
        f"{result['poems']:,} poems: Empath gives the NRC label to {result['agreement']:.1%} "
        f"(Cohen's kappa {result['kappa']:.2f}); on the {result['emotional_poems']:,} poems NRC "
        f"gives an emotion, {result['agreement_on_emotional']:.1%}; Empath finds no emotion "
        f"(neutral) in {result['empath_neutral']:.1%}"
    )
    print()
    print("| NRC label | poems | Empath agrees |")
    print("|---|---:|---:|")
    for label in LABELS:
        row = result["per_label"][label]
        share = row["empath_agrees"] / row["poems"] if row["poems"] else 0.0
        print(f"| {label} | {row['poems']:,} | {share:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
