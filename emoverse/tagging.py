"""Tag poems with NRC Emotion Lexicon counts and write the nine label partitions.

Semantics: tokens are the poem's lowercased words (NRCLex's lookup is case-sensitive, so a
capitalised line-initial "Death" would otherwise never count); the ten raw counts come from
`NRCLex().load_token_list(tokens).raw_emotion_scores`; the label is the one emotion of the
eight with strictly the highest count, and `neutral` when there are no hits or a tie at the top.
"""

import hashlib
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from nrclex import NRCLex

from emoverse.atomic import atomic_path
from emoverse.emotions import EMOTIONS, LABELS, NEUTRAL
from emoverse.schema import COUNT_COLUMNS, POEM_SCHEMA, TAGGED_SCHEMA

# Words, keeping inner hyphens ("self-love") and apostrophes ("o'er") as TextBlob does.
_WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens, punctuation dropped."""
    return _WORD.findall(text.lower())


def count_emotions(tokens: Iterable[str], lexicon: NRCLex | None = None) -> dict[str, int]:
    """The ten NRC counts (eight emotions, positive, negative) for one token list."""
    lexicon = lexicon or NRCLex()
    lexicon.load_token_list(tokens)
    scores = lexicon.raw_emotion_scores
    return {c: int(scores.get(c, 0)) for c in COUNT_COLUMNS}


def label_for(counts: dict[str, int]) -> str:
    """The one emotion with strictly the highest count; `neutral` on no hits or a tie."""
    best = max(counts[e] for e in EMOTIONS)
    if best == 0:
        return NEUTRAL
    top = [e for e in EMOTIONS if counts[e] == best]
    return top[0] if len(top) == 1 else NEUTRAL


def split_for(poem_id: str) -> str:
    """train/validation/test (90/5/5) from a hash of the poem id: stable across runs and
    independent of which other poems are in the corpus."""
    bucket = int.from_bytes(hashlib.sha256(poem_id.encode()).digest()[:4], "big") % 100
    return "validation" if bucket < 5 else "test" if bucket < 10 else "train"


def tag_table(poems: pa.Table, *, on_progress: Callable[[int], None] | None = None) -> pa.Table:
    """Add the ten counts, `n_tokens`, `label` and `split` to a table of poems."""
    lexicon = NRCLex()  # one instance: the lexicon JSON is parsed once
    extra: dict[str, list] = {c: [] for c in (*COUNT_COLUMNS, "n_tokens", "label", "split")}
    for i, (poem_id, text) in enumerate(
        zip(poems.column("poem_id").to_pylist(), poems.column("text").to_pylist(), strict=True)
    ):
        tokens = tokenize(text)
        counts = count_emotions(tokens, lexicon)
        for c in COUNT_COLUMNS:
            extra[c].append(counts[c])
        extra["n_tokens"].append(len(tokens))
        extra["label"].append(label_for(counts))
        extra["split"].append(split_for(poem_id))
        if on_progress is not None and (i + 1) % 200 == 0:
            on_progress(200)
    if on_progress is not None and poems.num_rows % 200:
        on_progress(poems.num_rows % 200)
    columns = {name: poems.column(name) for name in POEM_SCHEMA.names}
    columns.update(extra)
    return pa.table(columns, schema=TAGGED_SCHEMA)


def write_partitions(tagged: pa.Table, partitions_dir: Path) -> dict[str, int]:
    """Write one Parquet file per label under `emotion=<label>/` (hive layout), all nine
    labels even when empty, replacing the previous partitions in one swap.
    Returns the row count per label."""
    counts: dict[str, int] = {}
    labels = tagged.column("label")
    with atomic_path(Path(partitions_dir)) as tmp:
        for label in LABELS:
            rows = tagged.filter(pc.equal(labels, label))
            part = tmp / f"emotion={label}"
            part.mkdir(parents=True)
            pq.write_table(rows, part / "part-0.parquet")
            counts[label] = rows.num_rows
    return counts


def read_partition(partitions_dir: Path, label: str, split: str | None = None) -> pa.Table:
    """Read one label's rows (optionally one split) with the declared schema."""
    table = pq.read_table(Path(partitions_dir) / f"emotion={label}", schema=TAGGED_SCHEMA)
    if split is not None:
        table = table.filter(pc.equal(table.column("split"), split))
    return table
