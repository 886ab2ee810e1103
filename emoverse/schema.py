"""Declared Parquet schemas for the datasets that stages hand to each other."""

import pyarrow as pa

from emoverse.emotions import EMOTIONS, POLARITIES

# One row per poem, or per passage of a long poem (`passage_index` > 0 for later passages).
POEM_SCHEMA = pa.schema(
    [
        pa.field("poem_id", pa.string(), nullable=False),  # "<gutenberg_id>-<position>", stable
        pa.field("gutenberg_id", pa.int32(), nullable=False),
        pa.field("book_title", pa.string()),
        pa.field("author", pa.string()),
        pa.field("poem_title", pa.string()),
        pa.field("passage_index", pa.int16(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("n_lines", pa.int32(), nullable=False),
        pa.field("n_words", pa.int32(), nullable=False),
        pa.field("source_sha256", pa.string(), nullable=False),  # of the raw book file
    ]
)

COUNT_COLUMNS: tuple[str, ...] = (*EMOTIONS, *POLARITIES)

# The poem columns, the ten NRC counts, then what tagging derives. `label` is also the
# hive partition key (`emotion=<label>/`); it is kept as a column so a single file is
# self-describing when read on its own.
TAGGED_SCHEMA = pa.schema(
    [
        *POEM_SCHEMA,
        *(pa.field(c, pa.int32(), nullable=False) for c in COUNT_COLUMNS),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # train / validation / test
    ]
)

# What ingest left out, and why: one row per rejected book (poem_title and passage_index null)
# or per dropped section, plus per-book summary rows ("front/back matter dropped",
# "12 blocks, 340 lines").
REJECT_SCHEMA = pa.schema(
    [
        pa.field("gutenberg_id", pa.int32(), nullable=False),
        pa.field("poem_title", pa.string()),
        pa.field("passage_index", pa.int16()),
        pa.field("reason", pa.string(), nullable=False),  # one of emoverse.corpus.REJECT_REASONS
        pa.field("detail", pa.string(), nullable=False),
    ]
)
