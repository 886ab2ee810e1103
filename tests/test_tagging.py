"""Tagging: NRCLex counts, the strict-max label rule, splits, and the nine partitions."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nrclex import NRCLex

from emoverse.emotions import EMOTIONS, LABELS, NEUTRAL
from emoverse.gutenberg import book_to_rows
from emoverse.schema import COUNT_COLUMNS, POEM_SCHEMA, TAGGED_SCHEMA
from emoverse.tagging import (
    count_emotions,
    label_for,
    read_partition,
    split_for,
    tag_table,
    tokenize,
    write_partitions,
)


@pytest.fixture(scope="module")
def blake_poems(gutenberg_dir) -> pa.Table:
    raw = (gutenberg_dir / "cache/epub/574/pg574.txt").read_bytes()
    return pa.Table.from_pylist(book_to_rows(574, raw), schema=POEM_SCHEMA)


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("Death, be not proud; O'er the self-love!") == [
        "death",
        "be",
        "not",
        "proud",
        "o'er",
        "the",
        "self-love",
    ]


def test_capitalised_words_count_once_lowercased():
    # NRCLex's lookup is case-sensitive: "Death" alone scores nothing.
    lexicon = NRCLex()
    lexicon.load_token_list(["Death"])
    assert lexicon.raw_emotion_scores == {}
    assert count_emotions(tokenize("Death"))["fear"] == 1


def test_counts_equal_nrclex_for_every_poem_of_a_real_book(blake_poems):
    lexicon = NRCLex()
    tagged = tag_table(blake_poems)
    for row in tagged.to_pylist():
        lexicon.load_token_list(tokenize(row["text"]))
        expected = {c: lexicon.raw_emotion_scores.get(c, 0) for c in COUNT_COLUMNS}
        assert {c: row[c] for c in COUNT_COLUMNS} == expected
        assert row["n_tokens"] == len(tokenize(row["text"]))


def _counts(**emotions: int) -> dict[str, int]:
    return {c: emotions.get(c, 0) for c in COUNT_COLUMNS}


@pytest.mark.parametrize(
    ("counts", "label"),
    [
        (_counts(joy=3, trust=2), "joy"),
        (_counts(fear=1), "fear"),
        (_counts(), NEUTRAL),  # no hits
        (_counts(joy=2, sadness=2, fear=1), NEUTRAL),  # a tie at the top
        (_counts(positive=9, joy=1), "joy"),  # polarity never labels
        (_counts(positive=5, negative=5), NEUTRAL),
    ],
)
def test_label_is_the_strict_maximum_of_the_eight(counts, label):
    assert label_for(counts) == label


def test_split_is_stable_and_near_90_5_5():
    ids = [f"{b}-{i:05d}" for b in (1041, 574, 12242) for i in range(2000)]
    splits = [split_for(i) for i in ids]
    assert splits == [split_for(i) for i in ids]
    share = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert 0.88 < share["train"] < 0.92
    assert 0.04 < share["validation"] < 0.06
    assert 0.04 < share["test"] < 0.06


def test_write_partitions_gives_nine_hive_partitions(blake_poems, tmp_path):
    tagged = tag_table(blake_poems)
    counts = write_partitions(tagged, tmp_path / "partitions")
    assert set(counts) == set(LABELS)
    assert sum(counts.values()) == blake_poems.num_rows
    assert sorted(p.name for p in (tmp_path / "partitions").iterdir()) == sorted(
        f"emotion={label}" for label in LABELS
    )
    for label in LABELS:
        part = read_partition(tmp_path / "partitions", label)
        assert part.schema == TAGGED_SCHEMA
        assert part.num_rows == counts[label]
        assert set(part.column("label").to_pylist()) <= {label}
    # The whole directory reads back as one hive-partitioned dataset.
    whole = pq.read_table(tmp_path / "partitions")
    assert whole.num_rows == blake_poems.num_rows
    assert set(whole.column("emotion").to_pylist()) == {k for k, v in counts.items() if v}
    assert any(counts[e] for e in EMOTIONS)


def test_a_failed_write_keeps_the_previous_partitions(blake_poems, tmp_path, monkeypatch):
    tagged = tag_table(blake_poems)
    target = tmp_path / "partitions"
    before = write_partitions(tagged, target)

    calls = {"n": 0}
    real_write = pq.write_table

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_partitions(tagged.slice(0, 3), target)
    monkeypatch.undo()

    assert {label: read_partition(target, label).num_rows for label in LABELS} == before
    assert [p.name for p in tmp_path.iterdir()] == ["partitions"]  # no temp folder left
