"""Tagging: tokens and counts equal to the NLTK + NRCLex reference, the label rule, splits, and
the nine versioned partitions (manifest, skip on fingerprint, crash safety, `datasets`)."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nltk.tokenize import NLTKWordTokenizer
from nrclex import NRCLex

from emoverse import tagging
from emoverse.corpus import book_to_rows
from emoverse.emotions import EMOTIONS, LABELS, NEUTRAL
from emoverse.errors import EmoverseError, MissingStageOutputError
from emoverse.schema import COUNT_COLUMNS, POEM_SCHEMA, TAGGED_SCHEMA
from emoverse.tagging import (
    Tagger,
    count_emotions,
    count_texts,
    counting,
    label_for,
    label_texts,
    labels_for,
    list_versions,
    read_manifest,
    read_partition,
    read_partitions,
    split_for,
    tag_poems,
    tag_report,
    tag_table,
    tokenize,
    write_partitions,
)
from emoverse.tagging.tokenize import chunked_tokens, reference_tokens

REPO = Path(__file__).resolve().parents[2]

# Parity books: the reference four, typographic quotes (utf-8), heavy apostrophes and double
# quotes, latin-1 and cp1252 sources: ~35k lines, the reference path takes a few seconds.
PARITY_BOOKS = [1065, 1544, 1321, 1459, 982, 2002, 3021, 1934, 574, 6036, 259, 207]
PARITY_BOOKS += [8801, 438, 1505, 4730, 2819, 1041, 3026, 213, 214, 12242, 4295]


def _poems(gutenberg_dir: Path, book_id: int) -> pa.Table:
    raw = (gutenberg_dir / f"cache/epub/{book_id}/pg{book_id}.txt").read_bytes()
    return pa.Table.from_pylist(book_to_rows(book_id, raw), schema=POEM_SCHEMA)


@pytest.fixture(scope="module")
def blake_poems(gutenberg_dir) -> pa.Table:
    return _poems(gutenberg_dir, 574)


@pytest.fixture(scope="module")
def blake_tagged(blake_poems) -> pa.Table:
    return tag_table(blake_poems, workers=1)


def _as_dict(row: np.ndarray) -> dict[str, int]:
    return dict(zip(COUNT_COLUMNS, row.tolist(), strict=True))


def _reference_counts(text: str) -> tuple[dict[str, int], int]:
    tokens = reference_tokens(text)
    return count_emotions(tokens), len(tokens)


# --- tokens -----------------------------------------------------------------------------------


def test_typographic_quotes_and_dashes_are_split_as_nltk_word_tokenize_does():
    # "love’s" is love: NRCLex's users count it (TextBlob's words, NLTKWordTokenizer).
    text = "“My love’s world—come”"
    expected = ["“", "my", "love", "’", "s", "world", "—", "come", "”"]
    assert tokenize.tokenize(text) == chunked_tokens(text) == reference_tokens(text) == expected
    counts, _ = count_texts(pa.array([text]), workers=1)
    assert _as_dict(counts[0])["joy"] == count_emotions(["love"])["joy"] == 1


def test_tokenize_lowercases_and_drops_punctuation():
    text = "Death, be not proud; O'er the self-love!"
    expected = ["death", "be", "not", "proud", "o'er", "the", "self-love"]
    assert tokenize.tokenize(text) == chunked_tokens(text) == reference_tokens(text) == expected


@pytest.mark.parametrize(
    "line",
    [
        "I cannot tell, and 'tis the world's end.",
        "Don't DON'T can't won't they'll we're I've she'd 'Twas",
        '"Hello," she said, "it\'s gonna be fine--or wanna be."',
        "The lovers' vows... (and [then] {some}) <tags> & more'n d'ye",
        "  “Curly” quotes’ and night’s—dashes are split off",
        "love’s world’s “death come—to ‘Tis «guillemets» „low” and – en – dashes",
        "'em. 'Tis. He said “I am dead. ”  ‘It is’ ... a.. b*c",
        "Numbers 3,36 and 1.5 and e.g. Mr. Smith. 'Neath the moon.'",
        "``Backticks'' and '' doubled '' quotes ' alone",
        "_Italics_ and *stars* and self--love, too:",
        "Gimme, lemme, gotta, CANNOT! ’cannot’ and wanna-be",
    ],
)
def test_tokens_equal_the_reference_on_tricky_lines(line):
    assert tokenize.tokenize(line) == chunked_tokens(line) == reference_tokens(line)


def test_tokens_equal_the_reference_on_random_lines():
    # Lines glued from the fragments the tokenizer's rules react to, with and without spaces.
    fragments = [
        *["love", "Death", "cannot", "gonna", "wanna", "tis", "'tis", "'Twas", "o'er"],
        *["don't", "DON'T", "can't", "lovers'", "d'ye", "more'n", "x", "3", "3,36", "’s"],
        *[",", ".", "...", ";", ":", "!", "?", "'", "''", '"', "``", "`", "(", ")", "[", "]"],
        *["--", "-", "&", "’", "“", "”", "_", "<", "'s", "'ll", "n't", "'d", "'M"],
        *["‘", "«", "»", "„", "—", "–", "*", "..", "love’s", "“death", "come—to", "'em"],
    ]
    rng = random.Random(4)
    texts = []
    for _ in range(200):
        lines = []
        for _ in range(rng.randint(1, 6)):
            parts = [rng.choice(fragments) for _ in range(rng.randint(0, 10))]
            glue = [rng.choice([" ", "", "", "  "]) for _ in parts]
            body = "".join(g + p for g, p in zip(glue, parts, strict=True))
            lines.append(" " * rng.choice([0, 0, 2]) + body + " " * rng.choice([0, 0, 1, 3]))
        texts.append("\n".join(lines))
    for text in texts:
        assert chunked_tokens(text) == tokenize.tokenize(text) == reference_tokens(text), text
    # The batch path (Arrow chunking, plain chunks in bulk) gives the same counts.
    counts, n_tokens = Tagger().count(pa.array(texts))
    for i, text in enumerate(texts):
        expected, n = _reference_counts(text)
        assert (n_tokens[i], _as_dict(counts[i])) == (n, expected), text


def test_text_with_odd_whitespace_takes_the_exact_path():
    texts = ["Love\tand hate,\r\nfear\u00a0and joy", "plain love", "a\u2028b love's"]
    counts, n_tokens = Tagger().count(pa.array(texts))
    for i, text in enumerate(texts):
        expected, n = _reference_counts(text)
        assert n_tokens[i] == n
        assert _as_dict(counts[i]) == expected


def test_tokenizer_patterns_are_the_installed_nltk_ones():
    def patterns(rules):
        return [(getattr(r, "pattern", r), s) for r, s in rules]

    tb = NLTKWordTokenizer
    assert patterns(tokenize._STARTING_QUOTES) == patterns(tb.STARTING_QUOTES)
    assert patterns(tokenize._PUNCTUATION) == patterns(tb.PUNCTUATION)
    assert patterns([tokenize._PARENS_BRACKETS]) == patterns([tb.PARENS_BRACKETS])
    assert patterns([tokenize._DOUBLE_DASHES]) == patterns([tb.DOUBLE_DASHES])
    assert patterns(tokenize._ENDING_QUOTES) == patterns(tb.ENDING_QUOTES)
    assert [r.pattern for r in tokenize._CONTRACTIONS2] == [r.pattern for r in tb.CONTRACTIONS2]
    assert [r.pattern for r in tokenize._CONTRACTIONS3] == [r.pattern for r in tb.CONTRACTIONS3]


# --- counts -----------------------------------------------------------------------------------


def test_capitalised_words_count_once_lowercased():
    # NRCLex's lookup is case-sensitive: "Death" alone scores nothing.
    lexicon = NRCLex()
    lexicon.load_token_list(["Death"])
    assert lexicon.raw_emotion_scores == {}
    assert count_emotions(tokenize.tokenize("Death"))["fear"] == 1


def test_counts_equal_nrclex_for_every_poem_of_a_real_book(blake_poems, blake_tagged):
    for row in blake_tagged.to_pylist():
        expected, n_tokens = _reference_counts(row["text"])
        assert {c: row[c] for c in COUNT_COLUMNS} == expected
        assert row["n_tokens"] == n_tokens


def test_counts_and_tokens_equal_the_reference_over_23_books(full_gutenberg_dir):
    poems = pa.concat_tables([_poems(full_gutenberg_dir, b) for b in PARITY_BOOKS])
    assert len(set(poems.column("gutenberg_id").to_pylist())) >= 20
    tagged = tag_table(poems, workers=1).to_pydict()
    for i, text in enumerate(tagged["text"]):
        tokens = reference_tokens(text)
        assert chunked_tokens(text) == tokens, tagged["poem_id"][i]
        expected = count_emotions(tokens)
        assert {c: tagged[c][i] for c in COUNT_COLUMNS} == expected, tagged["poem_id"][i]
        assert tagged["n_tokens"][i] == len(tokens)
        assert tagged["label"][i] == label_for(expected)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("EMOVERSE_FULL_PARITY"), reason="set EMOVERSE_FULL_PARITY=1 (~2 min)"
)
def test_counts_equal_the_reference_over_the_whole_mirror(full_gutenberg_dir):
    lines = (full_gutenberg_dir / "MANIFEST.tsv").read_text().splitlines()[1:]
    poems = pa.concat_tables([_poems(full_gutenberg_dir, int(x.split("\t")[0])) for x in lines])
    tagged = tag_table(poems, workers=2).to_pydict()
    for i, text in enumerate(tagged["text"]):
        expected, n_tokens = _reference_counts(text)
        assert {c: tagged[c][i] for c in COUNT_COLUMNS} == expected, tagged["poem_id"][i]
        assert tagged["n_tokens"][i] == n_tokens


@pytest.mark.slow
def test_worker_processes_give_the_same_rows(blake_poems, blake_tagged, monkeypatch):
    monkeypatch.setattr(counting, "PARALLEL_MIN_LINES", 0)  # spread even a small book
    monkeypatch.setattr(counting, "BATCH_CHARS", 10_000)
    seen = []
    assert tag_table(blake_poems, workers=2, on_progress=seen.append).equals(blake_tagged)
    assert len(seen) > 2 and sum(seen) == blake_poems.num_rows


def test_the_lexicon_is_the_file_nrclex_ships():
    raw = resources.files("nrclex.data").joinpath("nrc_en.json").read_bytes()
    lexicon = tagging.load_lexicon()
    assert lexicon.sha256 == hashlib.sha256(raw).hexdigest()
    assert lexicon.matrix.shape == (len(json.loads(raw)), len(COUNT_COLUMNS))


def test_lemmatization_looks_words_up_by_their_noun_lemma():
    texts = pa.array(["Fears and sorrows, joys!"])
    surface, n_surface = count_texts(texts, workers=1)
    lemma, n_lemma = count_texts(texts, lemmatize=True, workers=1)
    lemmas = {"fears": "fear", "sorrows": "sorrow", "joys": "joy"}
    expected = count_emotions([lemmas.get(t, t) for t in reference_tokens(texts[0].as_py())])
    assert _as_dict(lemma[0]) == expected
    assert (expected["fear"], expected["sadness"], expected["joy"]) == (2, 1, 1)
    assert _as_dict(surface[0])["joy"] == 0
    assert lemma[0].sum() > surface[0].sum()
    assert n_lemma[0] == n_surface[0] == 4  # tokens stay surface forms
    # Words that are their own lemma, and words outside the lexicon, are left alone.
    assert tagging.noun_lemmatizer()("love") == "love"
    assert tagging.noun_lemmatizer()("children") == "child"


@pytest.mark.parametrize(
    ("text", "counted"),
    [
        ("I am not happy", False),
        ("no, never happy", False),
        ("Nor joy nor peace", False),
        ("I cannot love", False),
        ("I don't love", False),
        ("I don’t love", False),  # typographic apostrophe: "don" "’" "t"
        ("without happy rest", False),
        ("not one two happy", False),  # three tokens back
        ("not one two three happy", True),  # four: out of reach
        ("happy not", True),  # after the hit: no effect
        ("not here,\nhappy", True),  # another line
    ],
)
def test_negation_drops_hits_shortly_after_a_negator_on_the_same_line(text, counted):
    joy = COUNT_COLUMNS.index("joy")
    plain, _ = count_texts(pa.array([text]), workers=1)
    negated, _ = count_texts(pa.array([text]), negation=True, workers=1)
    assert plain[0, joy] >= 1  # without negation it is NRCLex's count
    assert bool(negated[0, joy] == plain[0, joy]) is counted
    assert label_texts([text], negation=True) == [label_for(_as_dict(negated[0]))]


def test_negation_recounts_only_poems_with_a_negator(blake_poems, blake_tagged):
    counts, n_tokens = count_texts(blake_poems.column("text"), negation=True, workers=1)
    texts = blake_poems.column("text").to_pylist()
    plain = np.array([blake_tagged.column(c).to_pylist() for c in COUNT_COLUMNS]).T
    assert (n_tokens == np.array(blake_tagged.column("n_tokens").to_pylist())).all()
    assert (counts <= plain).all() and (counts < plain).any()
    for i, text in enumerate(texts):
        tokens = set(tokenize.tokenize(text))
        if tokens.isdisjoint(tagging.NEGATORS) and "t" not in tokens:
            assert (counts[i] == plain[i]).all()


# --- labels and splits ------------------------------------------------------------------------


def _counts(**emotions: int) -> dict[str, int]:
    return {c: emotions.get(c, 0) for c in COUNT_COLUMNS}


@pytest.mark.parametrize(
    ("counts", "rule", "label"),
    [
        (_counts(joy=3, trust=2), {}, "joy"),
        (_counts(fear=1), {}, "fear"),
        (_counts(), {}, NEUTRAL),  # no hits
        (_counts(joy=2, sadness=2, fear=1), {}, NEUTRAL),  # a tie at the top
        (_counts(positive=9, joy=1), {}, "joy"),  # polarity never labels
        (_counts(positive=5, negative=5), {}, NEUTRAL),
        (_counts(fear=1), {"min_hits": 2}, NEUTRAL),  # too few hits for the top emotion
        (_counts(fear=2, anger=1), {"min_hits": 2}, "fear"),
        (_counts(joy=3, trust=2), {"min_margin": 2}, NEUTRAL),  # too close to the runner-up
        (_counts(joy=4, trust=2), {"min_margin": 2}, "joy"),
        (_counts(joy=4, trust=2), {"min_hits": 5, "min_margin": 1}, NEUTRAL),
    ],
)
def test_label_is_the_strict_maximum_of_the_eight(counts, rule, label):
    assert label_for(counts, **rule) == label
    matrix = np.array([[counts[c] for c in COUNT_COLUMNS]])
    assert LABELS[labels_for(matrix, **rule)[0]] == label


def test_vectorized_labels_agree_with_label_for():
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 4, size=(2000, len(COUNT_COLUMNS)))
    for rule in ({}, {"min_hits": 2}, {"min_margin": 2}, {"min_hits": 3, "min_margin": 2}):
        rows = [_as_dict(r) for r in matrix]
        assert [LABELS[i] for i in labels_for(matrix, **rule)] == [
            label_for(r, **rule) for r in rows
        ]


def test_min_hits_and_margin_below_one_are_refused():
    with pytest.raises(EmoverseError, match="at least 1"):
        label_for(_counts(joy=1), min_margin=0)


def test_split_is_stable_and_near_90_5_5():
    ids = [f"{b}-{i:05d}" for b in (1041, 574, 12242) for i in range(2000)]
    splits = [split_for(i) for i in ids]
    assert splits == [split_for(i) for i in ids]
    share = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert 0.88 < share["train"] < 0.92
    assert 0.04 < share["validation"] < 0.06
    assert 0.04 < share["test"] < 0.06


# --- partitions -------------------------------------------------------------------------------


def test_write_partitions_gives_nine_hive_partitions(blake_poems, blake_tagged, tmp_path):
    counts = write_partitions(blake_tagged, tmp_path / "partitions")
    assert set(counts) == set(LABELS)
    assert sum(counts.values()) == blake_poems.num_rows
    # The Hub's layout: the card and the manifest at the root, the Parquet under data/.
    assert sorted(p.name for p in (tmp_path / "partitions").iterdir()) == [
        "README.md", "_manifest.json", "data"
    ]
    assert sorted(p.name for p in (tmp_path / "partitions" / "data").iterdir()) == sorted(
        f"emotion={label}" for label in LABELS
    )
    for label in LABELS:
        part = read_partition(tmp_path / "partitions", label)
        assert part.schema == TAGGED_SCHEMA
        assert part.num_rows == counts[label]
        assert set(part.column("label").to_pylist()) <= {label}
    for label in LABELS:  # one file per split, those without rows schema-only
        folder = tmp_path / "partitions" / "data" / f"emotion={label}"
        assert {p.name for p in folder.iterdir()} == {
            f"{split}.parquet" for split in tagging.SPLITS
        }
    # pyarrow reads data/ as one hive-partitioned dataset, as it is.
    whole = pq.read_table(tmp_path / "partitions" / "data")
    assert whole.num_rows == blake_poems.num_rows
    assert set(whole.column("emotion").to_pylist()) == {k for k, v in counts.items() if v}
    assert any(counts[e] for e in EMOTIONS)


def test_a_failed_write_keeps_the_previous_partitions(blake_tagged, tmp_path, monkeypatch):
    target = tmp_path / "partitions"
    before = write_partitions(blake_tagged, target)

    calls = {"n": 0}
    real_write = pq.write_table

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:  # the first file with rows: some empty ones are written by then
            raise OSError("disk full")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_partitions(blake_tagged.slice(0, 3), target)
    monkeypatch.undo()

    assert {label: read_partition(target, label).num_rows for label in LABELS} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partitions", "partitions.versions"]
    assert list_versions(target) == ["v000001"]
    assert not list((tmp_path / "partitions.versions").glob(".tmp-*"))  # no temp folder left


@pytest.fixture
def poems_file(blake_poems, tmp_path) -> Path:
    path = tmp_path / "poems" / "poems.parquet"
    path.parent.mkdir()
    pq.write_table(blake_poems, path)
    return path


def test_the_manifest_records_counts_tagger_lexicon_and_input(poems_file, tmp_path):
    result = tag_poems(poems_file, tmp_path / "partitions", workers=1)
    manifest = read_manifest(tmp_path / "partitions")
    assert not result.skipped and result.manifest == manifest
    assert manifest["version"] == result.version == "v000001"
    assert manifest["tagger_version"] == tagging.TAGGER_VERSION
    assert manifest["lexicon"]["sha256"] == tagging.load_lexicon().sha256
    assert manifest["input"]["sha256"] == hashlib.sha256(poems_file.read_bytes()).hexdigest()
    assert manifest["input"]["poems"] == manifest["rows"] == sum(manifest["counts"].values())
    assert manifest["options"] == {
        "min_hits": 1,
        "min_margin": 1,
        "lemmatize": False,
        "negation": False,
    }
    assert manifest["label_changes"] is None  # nothing before it
    assert manifest["tokens"] == "surface"
    tagged = read_partitions(tmp_path / "partitions").to_pydict()
    for label in LABELS:
        for split in tagging.SPLITS:
            pairs = zip(tagged["label"], tagged["split"], strict=True)
            n = sum(1 for lb, s in pairs if lb == label and s == split)
            assert manifest["splits"][label][split] == n
        assert sum(manifest["splits"][label].values()) == manifest["counts"][label]
    assert result.counts == manifest["counts"]


def test_unchanged_input_and_options_are_skipped(poems_file, blake_poems, tmp_path):
    target = tmp_path / "partitions"
    first = tag_poems(poems_file, target, workers=1)
    again = tag_poems(poems_file, target, workers=1)
    assert again.skipped and again.version == first.version and again.counts == first.counts
    assert list_versions(target) == ["v000001"]
    # Other options, other input, or `force`: a new version each.
    assert tag_poems(poems_file, target, min_margin=2, workers=1).version == "v000002"
    pq.write_table(blake_poems.slice(0, 10), poems_file)
    changed = tag_poems(poems_file, target, min_margin=2, workers=1)
    assert not changed.skipped and changed.version == "v000003"
    assert sum(changed.counts.values()) == 10
    assert tag_poems(poems_file, target, min_margin=2, workers=1, force=True).version == "v000004"


def test_versions_are_kept_three_deep_and_readable(blake_tagged, tmp_path):
    target = tmp_path / "partitions"
    for n in (5, 10, 15, 20):
        write_partitions(blake_tagged.slice(0, n), target)
    assert list_versions(target) == ["v000002", "v000003", "v000004"]
    assert os.readlink(target) == "partitions.versions/v000004"
    assert read_partitions(target).num_rows == 20
    older = tmp_path / "partitions.versions" / "v000003"
    assert json.loads((older / "_manifest.json").read_text())["rows"] == 15
    assert read_partitions(older).num_rows == 15


def test_partitions_from_before_versions_are_moved_aside(blake_tagged, tmp_path):
    target = tmp_path / "partitions"
    (target / "emotion=joy").mkdir(parents=True)
    pq.write_table(blake_tagged.slice(0, 2), target / "emotion=joy" / "part-0.parquet")
    write_partitions(blake_tagged, target)
    assert target.is_symlink() and read_partitions(target).num_rows == blake_tagged.num_rows
    assert list_versions(target) == ["v000000", "v000001"]


@pytest.mark.slow
def test_a_killed_writer_leaves_the_previous_version_current(blake_tagged, tmp_path):
    target = tmp_path / "partitions"
    before = write_partitions(blake_tagged, target)
    big = tmp_path / "big.parquet"  # ~15 MB in memory: writing it takes a moment
    pq.write_table(pa.concat_tables([blake_tagged] * 300), big)
    code = (
        "import sys; from pathlib import Path; import pyarrow.parquet as pq; "
        "from emoverse.tagging import write_partitions; "
        "write_partitions(pq.read_table(sys.argv[1]), Path(sys.argv[2]))"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(big), str(target)], cwd=REPO)
    store = tmp_path / "partitions.versions"
    deadline = time.monotonic() + 60
    try:
        while not any(store.glob(".tmp-*/data/emotion=*")):  # mid-write
            assert writer.poll() is None, "the writer ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert any(store.glob(".tmp-*"))  # killed half-way, and nothing cleaned up after it

    assert read_manifest(target)["version"] == "v000001"
    assert list_versions(target) == ["v000001"]
    assert {label: read_partition(target, label).num_rows for label in LABELS} == before
    assert read_partitions(target).num_rows == blake_tagged.num_rows
    # The next writer clears the leftovers and goes on.
    write_partitions(blake_tagged.slice(0, 7), target)
    assert read_manifest(target)["rows"] == 7 and list_versions(target)[-1] == "v000002"
    assert not any(store.glob(".tmp-*"))


def test_training_reads_the_current_version_through_datasets(blake_tagged, tmp_path):
    from models.training.data import load_partition

    target = tmp_path / "partitions"
    cache = tmp_path / "hf"
    labels = blake_tagged.column("label").to_pylist()
    label = max(LABELS, key=labels.count)
    write_partitions(blake_tagged.slice(0, 10), target)
    first = load_partition(target, label, "train", cache_dir=cache)
    write_partitions(blake_tagged, target)
    second = load_partition(target, label, "train", cache_dir=cache)
    expected = read_partition(target, label, "train")
    assert len(second) == expected.num_rows > len(first)
    assert second["poem_id"] == expected.column("poem_id").to_pylist()


def test_report_prints_the_distribution_per_split(poems_file, tmp_path):
    with pytest.raises(MissingStageOutputError, match="run `emoverse tag` first"):
        tag_report(tmp_path / "partitions")
    result = tag_poems(poems_file, tmp_path / "partitions", workers=1)
    report = tag_report(tmp_path / "partitions")
    assert "partitions v000001" in report and "surface tokens" in report
    for label in LABELS:
        line = next(x for x in report.splitlines() if x.startswith(label + " "))
        assert line.split()[1] == str(result.counts[label])
    total = next(x for x in report.splitlines() if x.startswith("total "))
    assert total.split()[1] == str(sum(result.counts.values()))
    assert report.splitlines()[-1] == "labels changed: no earlier version to compare with"


def test_a_new_version_says_how_many_labels_changed(poems_file, tmp_path):
    target = tmp_path / "partitions"
    tag_poems(poems_file, target, workers=1)
    before = read_partitions(target).to_pydict()
    negated = tag_poems(poems_file, target, negation=True, workers=1)
    after = read_partitions(target).to_pydict()
    old = dict(zip(before["poem_id"], before["label"], strict=True))
    moved = sum(1 for p, lb in zip(after["poem_id"], after["label"], strict=True) if old[p] != lb)
    changes = negated.manifest["label_changes"]
    assert changes["against"] == "v000001" and changes["compared"] == len(old)
    assert changes["changed"] == moved > 0
    assert sum(changes["moves"].values()) <= moved
    report = tag_report(target)
    assert "negation on" in report
    assert f"labels changed against v000001: {moved} of {len(old)} poems" in report


def test_a_truncated_partition_file_is_detected_and_tagged_again(poems_file, tmp_path):
    from models.training.data import load_partition

    target = tmp_path / "partitions"
    first = tag_poems(poems_file, target, workers=1)
    damaged = target / "data" / "emotion=joy" / "train.parquet"
    raw = damaged.read_bytes()
    damaged.resolve().write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MissingStageOutputError, match=r"emotion=joy/train\.parquet is damaged"):
        tag_report(target)  # it must not say all is well
    with pytest.raises(MissingStageOutputError, match="`emoverse tag` writes the partitions"):
        load_partition(target, "joy", "train")
    again = tag_poems(poems_file, target, workers=1)  # same input: tagged again, not skipped
    assert not again.skipped and again.version != first.version
    assert again.counts == first.counts
    assert "damaged" not in tag_report(target)
    # Same size, other bytes: only the hash tells, which the skip check reads.
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.resolve().write_bytes(bytes(raw))
    assert not tag_poems(poems_file, target, workers=1).skipped


def test_a_version_from_before_the_dataset_card_is_rewritten_without_counting(
    poems_file, tmp_path, monkeypatch
):
    from emoverse.tagging import stage, store

    target = tmp_path / "partitions"
    first = tag_poems(poems_file, target, workers=1)
    # Turn it into layout 1: one part-0.parquet per label, no card, the old manifest fields.
    version = target.resolve()
    manifest = json.loads((version / "_manifest.json").read_text())
    for label in LABELS:
        folder = version / f"emotion={label}"
        folder.mkdir()
        pq.write_table(read_partition(target, label), folder / "part-0.parquet")
    shutil.rmtree(version / "data")
    manifest["files"] = {label: f"emotion={label}/part-0.parquet" for label in LABELS}
    manifest["digests"] = {
        label: store._digest(version / manifest["files"][label]) for label in LABELS
    }
    del manifest["layout"]
    (version / "_manifest.json").write_text(json.dumps(manifest))
    (version / "README.md").unlink()
    assert not store.partition_problems(target, hashes=True)  # a sound layout-1 version
    before = {label: read_partition(target, label, "train").num_rows for label in LABELS}

    def no_counting(*args, **kwargs):
        raise AssertionError("the poems were tagged again")

    monkeypatch.setattr(stage, "tag_table", no_counting)
    again = tag_poems(poems_file, target, workers=1)
    assert not again.skipped and again.version == "v000002"
    assert again.counts == first.counts
    assert again.manifest["layout"] == store.LAYOUT
    assert again.manifest["fingerprint"] == first.manifest["fingerprint"]
    assert again.manifest["label_changes"]["changed"] == 0
    assert (target / "README.md").is_file()
    assert {label: read_partition(target, label, "train").num_rows for label in LABELS} == before
    assert tag_poems(poems_file, target, workers=1).skipped  # and now it is current


def test_a_version_with_the_card_beside_the_label_folders_moves_them_under_data(
    poems_file, tmp_path, monkeypatch
):
    """Layout 2 (label folders at the root, beside the card, where pandas and pyarrow stop at
    the card) still reads, and the next `tag` rewrites it under data/ without counting."""
    import pandas

    from emoverse.tagging import stage, store

    target = tmp_path / "partitions"
    first = tag_poems(poems_file, target, workers=1)
    version = target.resolve()
    manifest = json.loads((version / "_manifest.json").read_text())
    for label in LABELS:
        os.rename(version / "data" / f"emotion={label}", version / f"emotion={label}")
    (version / "data").rmdir()
    manifest["files"] = {
        label: {s: f"emotion={label}/{s}.parquet" for s in tagging.SPLITS} for label in LABELS
    }
    manifest["layout"] = 2
    del manifest["bytes"]
    (version / "_manifest.json").write_text(json.dumps(manifest))
    assert not store.partition_problems(target, hashes=True)
    before = {label: read_partition(target, label, "train").num_rows for label in LABELS}
    assert sum(before.values()) > 0

    def no_counting(*args, **kwargs):
        raise AssertionError("the poems were tagged again")

    monkeypatch.setattr(stage, "tag_table", no_counting)
    again = tag_poems(poems_file, target, workers=1)
    assert not again.skipped and again.manifest["layout"] == store.LAYOUT == 3
    assert again.counts == first.counts
    assert {label: read_partition(target, label, "train").num_rows for label in LABELS} == before
    assert len(pandas.read_parquet(target / "data")) == first.manifest["rows"]
    assert tag_poems(poems_file, target, workers=1).skipped
