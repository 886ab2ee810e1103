"""Tagging benchmark: every poem of the shared mirror through the project's tagger and through
the reference path, with the counts compared poem by poem.

    .venv/bin/python bench/tag.py [--mirror-dir ../shared/gutenberg] [--workers N]
                                  [--reference-poems N] [--options] [--punkt]

The poems are built with `book_to_rows` from every book in the mirror's MANIFEST.tsv (not
timed). Then, each timed from a fresh start:

* the tagger, end to end: tokenize, count, label (and split), `tag_table(..., workers=N)`;
* the reference: NLTK's NLTKWordTokenizer (what `nltk.word_tokenize` and TextBlob's `words`
  use) per line with TextBlob's word filter (`emoverse.tagging.tokenize.reference_tokens`), then
  `NRCLex().load_token_list(tokens)` per poem.

`--options` also tags with `lemmatize` and with `negation` and prints, per mode, the speed,
emotion hits per poem, the label distribution and how many labels change against the default.
`--punkt` checks the per-line reference against what TextBlob does with the whole poem
(Punkt sentence splitting, here with Punkt's untrained parameters since its model is a
download, then the word tokenizer per sentence): how many poems get the same counts.

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
from emoverse.emotions import EMOTIONS, LABELS  # noqa: E402
from emoverse.schema import COUNT_COLUMNS, POEM_SCHEMA  # noqa: E402
from emoverse.tagging import count_emotions, label_for, tag_table  # noqa: E402
from emoverse.tagging.counting import PARALLEL_MIN_LINES  # noqa: E402
from emoverse.tagging.tokenize import reference_tokens  # noqa: E402

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
    parser.add_argument("--options", action="store_true", help="also lemmatize and negation")
    parser.add_argument("--punkt", action="store_true", help="per line against Punkt sentences")
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
    if args.options:
        compare_options(poems, tagged, args.workers, n_lines)
    if args.punkt:
        compare_punkt(texts, expected)
    return 0 if not mismatches else 1


def compare_options(poems: pa.Table, default: pa.Table, workers: int, n_lines: int) -> None:
    """Speed, hits per poem and label shares with each option against the default."""
    modes = {"default": default}
    for name, option in (("lemmatize", {"lemmatize": True}), ("negation", {"negation": True})):
        started = time.perf_counter()
        modes[name] = tag_table(poems, workers=workers, **option)
        seconds = time.perf_counter() - started
        print(f"tagger with {name}: {seconds:.2f} s, {n_lines / seconds:,.0f} lines/s")
    labels = {name: table.column("label").to_pylist() for name, table in modes.items()}
    n = poems.num_rows
    print()
    print("| | " + " | ".join(modes) + " |")
    print("|---|" + "---:|" * len(modes))
    hits = {
        name: sum(sum(table.column(e).to_pylist()) for e in EMOTIONS) / n
        for name, table in modes.items()
    }
    print("| emotion hits per poem | " + " | ".join(f"{hits[m]:.2f}" for m in modes) + " |")
    for label in LABELS:
        shares = [labels[m].count(label) / n for m in modes]
        print(f"| {label} | " + " | ".join(f"{x:.1%}" for x in shares) + " |")
    changed = {
        m: sum(a != b for a, b in zip(labels["default"], labels[m], strict=True)) for m in modes
    }
    cells = " | ".join(f"{changed[m]:,} ({changed[m] / n:.1%})" for m in modes)
    print(f"| labels changed | {cells} |")


def compare_punkt(texts: list[str], expected: list[tuple[dict[str, int], int, str]]) -> None:
    """Per-line tokens against whole-poem Punkt sentences (untrained parameters)."""
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    from textblob.utils import strip_punc

    sentences, words = PunktSentenceTokenizer(), NLTKWordTokenizer()
    same_counts = same_tokens = 0
    for text, (counts, n_tokens, _) in zip(texts, expected, strict=True):
        tokens = [
            (w if w.startswith("'") else strip_punc(w, all=False)).lower()
            for sentence in sentences.tokenize(text)
            for w in words.tokenize(sentence)
            if strip_punc(w, all=False)
        ]
        same_counts += count_emotions(tokens) == counts
        same_tokens += len(tokens) == n_tokens
    print(
        f"punkt sentences (untrained) against per line: identical counts for {same_counts} of "
        f"{len(texts)} poems ({same_counts / len(texts):.2%}), same token count for {same_tokens}"
    )


if __name__ == "__main__":
    sys.exit(main())
