"""Tagging benchmark: every poem of the shared mirror through the project's tagger and through
the reference path, with the counts compared poem by poem.

    .venv/bin/python bench/tag.py [--mirror-dir ../shared/gutenberg] [--workers N]
                                  [--reference-poems N]

The poems are built with `book_to_rows` from every book in the mirror's MANIFEST.tsv (not
timed). Then, each timed from a fresh start:

* the tagger, end to end: tokenize, count, label (and split), `tag_table(..., workers=N)`;
* the reference: NLTK's TreebankWordTokenizer per line with TextBlob's word filter
  (`emoverse.tokenize.reference_tokens`), then `NRCLex().load_token_list(tokens)` per poem.

Lines are the poems' non-blank lines (`n_lines`). The reference runs on every poem unless
`--reference-poems` limits it to the first N (then only those are compared, and it says so).
"""

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from the checkout without installing

import pyarrow as pa  # noqa: E402
from nrclex import NRCLex  # noqa: E402

from emoverse.corpus import book_to_rows  # noqa: E402
from emoverse.schema import COUNT_COLUMNS, POEM_SCHEMA  # noqa: E402
from emoverse.tagging import PARALLEL_MIN_LINES, label_for, tag_table  # noqa: E402
from emoverse.tokenize import reference_tokens  # noqa: E402

DEFAULT_MIRROR = REPO.parent / "shared" / "gutenberg"


def mirror_poems(folder: Path) -> pa.Table:
    lines = (folder / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rows: list[dict] = []
    for book_id in (int(line.split("\t")[0]) for line in lines if line.strip()):
        path = folder / "cache" / "epub" / str(book_id) / f"pg{book_id}.txt"
        rows.extend(book_to_rows(book_id, path.read_bytes()))
    return pa.Table.from_pylist(rows, schema=POEM_SCHEMA)


def reference(texts: list[str]) -> list[tuple[dict[str, int], int, str]]:
    """(counts, n_tokens, label) per poem, the slow way."""
    out = []
    for text in texts:
        tokens = reference_tokens(text)
        lexicon = NRCLex()
        lexicon.load_token_list(tokens)
        counts = {c: int(lexicon.raw_emotion_scores.get(c, 0)) for c in COUNT_COLUMNS}
        out.append((counts, len(tokens), label_for(counts)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror-dir", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reference-poems", type=int, default=None, help="default: all")
    args = parser.parse_args()

    started = time.perf_counter()
    poems = mirror_poems(args.mirror_dir)
    n_poems = poems.num_rows
    n_lines = sum(poems.column("n_lines").to_pylist())
    print(
        f"{n_poems} poems, {n_lines} lines from {args.mirror_dir} "
        f"(built in {time.perf_counter() - started:.1f} s, not timed)"
    )
    print(f"load average before timing: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    started = time.perf_counter()
    tagged = tag_table(poems, workers=args.workers)
    ours = time.perf_counter() - started
    spread = args.workers > 1 and n_lines >= PARALLEL_MIN_LINES
    mode = f"{args.workers} processes" if spread else "one process"
    print(
        f"tagger (workers={args.workers}, {mode}; processes from {PARALLEL_MIN_LINES:,} lines): "
        f"{ours:.2f} s, {n_lines / ours:,.0f} lines/s, {n_poems / ours:,.0f} poems/s"
    )

    subset = n_poems if args.reference_poems is None else min(args.reference_poems, n_poems)
    sub_lines = sum(poems.column("n_lines").to_pylist()[:subset])
    texts = poems.column("text").to_pylist()[:subset]
    started = time.perf_counter()
    expected = reference(texts)
    theirs = time.perf_counter() - started
    scope = "all poems" if subset == n_poems else f"first {subset} poems"
    print(
        f"reference ({scope}): {theirs:.2f} s, {sub_lines / theirs:,.0f} lines/s, "
        f"{subset / theirs:,.0f} poems/s"
    )
    print(f"ratio: {(n_lines / ours) / (sub_lines / theirs):.1f}x the reference's lines/s")

    got = tagged.slice(0, subset).to_pydict()
    mismatches = [
        i
        for i, (counts, n_tokens, label) in enumerate(expected)
        if any(got[c][i] != counts[c] for c in COUNT_COLUMNS)
        or got["n_tokens"][i] != n_tokens
        or got["label"][i] != label
    ]
    verdict = "yes" if not mismatches else f"no ({len(mismatches)} differ)"
    print(f"counts identical: {verdict} ({subset} poems compared: ten counts, n_tokens, label)")
    for i in mismatches[:5]:
        print(f"  differs: {got['poem_id'][i]}")
    return 0 if not mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
