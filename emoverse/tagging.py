"""Tag poems with NRC Emotion Lexicon counts and write the nine label partitions, versioned.

Semantics:

* Tokens: `emoverse.tokenize` (lowercased words as TextBlob's `words` gives them: NLTK's
  word tokenizer, punctuation stripped, line by line; no NLTK data needed). NRCLex's lookup
  is case-sensitive, so a capitalised line-initial "Death" counts only because we lowercase.
* Counts: the ten raw counts (eight emotions, positive, negative) equal
  `NRCLex().load_token_list(tokens).raw_emotion_scores` over the lexicon file that the nrclex
  package ships; here they come from a (words x 10) matrix of that file, summed per poem.
* Label: the emotion of the eight with strictly the highest count; `neutral` when there are
  no hits or a tie at the top. `min_hits` (the top count must reach it) and `min_margin` (the
  top count must beat the runner-up by it) tighten the rule; their defaults, 1 and 1, are
  the rule itself.
* Optional noun lemmatization (`lemmatize`; lemminflect, whose data ships on PyPI): the
  lexicon is looked up by each token's noun lemma ("tears" as "tear"), as NRCLex's own
  `load_raw_text` does with WordNet; tokens and `n_tokens` stay surface forms.
* Optional negation (`negation`): a hit preceded within three tokens on its line by a negator
  ("not happy") does not count. Off by default, like lemmas: the default is NRCLex's counts.
* Split: train/validation/test from a hash of `poem_id`, 90/5/5, stable across runs.

Partitions: `<partitions>` is a symlink to `<partitions>.versions/vNNNNNN/`, which holds
`emotion=<label>/part-0.parquet` for all nine labels (TAGGED_SCHEMA) and `_manifest.json`.
A version is written under a temporary name, renamed when complete, and the link is then
switched in one `os.replace`: a crash at any point leaves the previous version current.
"""

import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from itertools import pairwise, repeat
from pathlib import Path
from typing import Any

import nrclex
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from nrclex import NRCLex

from emoverse.emotions import EMOTIONS, LABELS, NEUTRAL
from emoverse.errors import EmoverseError, MissingStageOutputError
from emoverse.schema import COUNT_COLUMNS, POEM_SCHEMA, TAGGED_SCHEMA
from emoverse.tokenize import (
    BOL,
    EOL,
    chunk_tokens,
    line_tokens,
    marked_chunks,
    needs_exact_path,
    plain_chunk_words,
    tokenize,
)

__all__ = [
    "KEEP_VERSIONS",
    "LEXICONS",
    "MANIFEST_NAME",
    "NEGATORS",
    "SPLITS",
    "TAGGER_VERSION",
    "Lexicon",
    "TagResult",
    "Tagger",
    "count_emotions",
    "count_texts",
    "judge_agreement",
    "label_for",
    "label_texts",
    "labels_for",
    "list_versions",
    "load_lexicon",
    "noun_lemmatizer",
    "read_manifest",
    "read_partition",
    "split_for",
    "tag_poems",
    "tag_report",
    "tag_table",
    "tokenize",
    "versions_dir",
    "write_partitions",
    "write_version",
]

# Bump whenever the same poems and options could give different rows.
TAGGER_VERSION = "3"  # 3: NLTKWordTokenizer (splits ’ “ ” —); lemminflect lemmas; negation
SPLITS: tuple[str, ...] = ("train", "validation", "test")
MANIFEST_NAME = "_manifest.json"  # a leading "_": pyarrow's dataset discovery skips it
KEEP_VERSIONS = 3
TOKENS_SURFACE = "surface"
TOKENS_LEMMAS = "lemminflect-noun-lemmas"

# Tokens that negate a hit up to three tokens after them on the same line. "n't" is how the
# tokenizer splits "don't", and "cannot" arrives as "can" "not"; "don’t" (a typographic
# apostrophe) arrives as "don" "’" "t", so a "t" right after "’" negates too.
NEGATORS = frozenset(
    [
        *("not", "no", "never", "nor", "n't", "without", "none", "nothing", "neither"),
        *("nobody", "nowhere", "ne'er", "naught", "nought"),
    ]
)
NEGATION_WINDOW = 3

# Below this many lines, worker processes cost more than they save: measured on 2 cores, the
# mirror's 600k lines take ~2.5 s in one process and no less in two (each starts an
# interpreter and fills its own chunk cache); 2.4M lines take ~20% less in two.
PARALLEL_MIN_LINES = 1_000_000
# Text per batch: big enough that Arrow does the splitting and hashing, small enough that a
# batch's chunks (~5x the text in memory) stay modest.
BATCH_CHARS = 4_000_000


# --- lexicon ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lexicon:
    """The NRC lexicon file that nrclex ships, as a word -> row index and a (words x 10)
    0/1 matrix in COUNT_COLUMNS order."""

    path: str
    sha256: str
    index: dict[str, int] = field(repr=False)
    matrix: np.ndarray = field(repr=False)


# The lexicons a poem can be judged by: `nrc`, what the partitions are tagged with, and
# `empath`, the eight Plutchik categories of Empath (Fast et al., 2016), built from fiction
# with word embeddings and crowd checks, independently of the NRC lexicon: a second judge of
# generated poems that the models were not trained to please.
LEXICONS = ("nrc", "empath")


@lru_cache(maxsize=2)
def load_lexicon(name: str = "nrc") -> Lexicon:
    """A lexicon as a word -> row index and a (words x 10) matrix in COUNT_COLUMNS order
    (Empath has no polarity: its last two columns are zero)."""
    if name == "nrc":
        source = resources.files("nrclex.data").joinpath("nrc_en.json")
        raw = source.read_bytes()
        entries: dict[str, list[str]] = json.loads(raw)
    elif name == "empath":
        source = resources.files("empath").joinpath("data", "categories.tsv")
        raw = source.read_bytes()
        entries = {}
        for line in raw.decode("utf-8").splitlines():
            category, *terms = line.split("\t")
            if category in EMOTIONS:
                for term in dict.fromkeys(terms):  # Empath counts a term once per category
                    entries.setdefault(term, []).append(category)
    else:
        raise EmoverseError(f"unknown lexicon {name!r}; valid: {', '.join(LEXICONS)}")
    column = {name: j for j, name in enumerate(COUNT_COLUMNS)}
    matrix = np.zeros((len(entries), len(COUNT_COLUMNS)), dtype=np.int32)
    index: dict[str, int] = {}
    for row, (word, affects) in enumerate(entries.items()):
        index[word] = row
        for affect in affects:  # NRCLex counts every listed affect once per token
            matrix[row, column[affect]] += 1
    return Lexicon(str(source), hashlib.sha256(raw).hexdigest(), index, matrix)


@lru_cache(maxsize=1)
def noun_lemmatizer() -> Callable[[str], str]:
    """A word's noun lemma by lemminflect (its dictionary and rules ship in the wheel, so it
    runs offline, unlike NLTK's WordNet data). Chosen over simplemma and WordNet's morphy
    rules by `bench/lemmas.py`: see bench/RESULTS.md."""
    from lemminflect import getLemma

    def lemma(word: str) -> str:
        found = getLemma(word, upos="NOUN")
        return found[0] if found else word

    return lemma


# --- counting ---------------------------------------------------------------------------------


class _LexiconRows(dict):
    """token -> lexicon row (-1: not in the lexicon), by its noun lemma when lemmatizing."""

    def __init__(self, index: dict[str, int], lemmatize: Callable[[str], str] | None):
        super().__init__()
        self.index = index
        self.lemmatize = lemmatize

    def __missing__(self, token: str) -> int:
        key = self.lemmatize(token) if self.lemmatize is not None else token
        row = self[token] = self.index.get(key, -1)
        return row


class _OtherChunks(dict):
    """chunk -> id for chunks outside the plain rule; an unseen one is tokenized (once per
    tagger) and waits in `pending` until `Tagger._count_pending` counts it in bulk."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[str, ...]] = []
        self.n_seen = 0

    def __missing__(self, chunk: str) -> int:
        cid = self[chunk] = self.n_seen + len(self.pending)
        self.pending.append(chunk_tokens(chunk))
        return cid


class Tagger:
    """Counts for batches of poems. Arrow splits every poem into marked chunks (see
    `emoverse.tokenize`) and hashes them; per distinct chunk, the plain ones (a word in
    punctuation, most of them) get their word and lexicon row in bulk, and the rest are
    tokenized in Python once per tagger (cached); numpy then sums per poem."""

    def __init__(self, lemmatize: bool = False, negation: bool = False, lexicon: str = "nrc"):
        self.lexicon = load_lexicon(lexicon)
        self.token_mode = TOKENS_LEMMAS if lemmatize else TOKENS_SURFACE
        self.negation = negation
        self._rows = _LexiconRows(self.lexicon.index, noun_lemmatizer() if lemmatize else None)
        self._other = _OtherChunks()
        self._other_n_tokens = np.zeros(0, dtype=np.int32)
        self._other_counts = np.zeros((0, len(COUNT_COLUMNS)), dtype=np.int32)

    def _token_counts(self, tokens: Iterable[str]) -> np.ndarray:
        rows = [row for row in map(self._rows.__getitem__, tokens) if row >= 0]
        return self.lexicon.matrix[rows].sum(axis=0, dtype=np.int32)

    def _negated_counts(self, text: str) -> np.ndarray:
        """The counts of one poem without the hits that a negator shortly before them on the
        same line cancels. Lines as in `chunked_tokens` (or `tokenize` for odd text)."""
        if needs_exact_path(pa.array([text])).to_pylist()[0]:
            lines = [line_tokens(line) for line in text.splitlines()]
        else:
            lines = [
                [t for c in (BOL + line.rstrip(" ") + EOL).split() for t in _chunk_tokens(c)]
                for line in text.split("\n")
            ]
        rows = []
        for tokens in lines:
            negator = [
                t in NEGATORS or (t == "t" and j > 0 and tokens[j - 1] == "’")
                for j, t in enumerate(tokens)
            ]
            for i, row in enumerate(map(self._rows.__getitem__, tokens)):
                if row >= 0 and not any(negator[max(0, i - NEGATION_WINDOW) : i]):
                    rows.append(row)
        return self.lexicon.matrix[rows].sum(axis=0, dtype=np.int32)

    def _count_pending(self) -> None:
        """Token counts and the ten counts of the newly seen other chunks, in bulk."""
        new = self._other.pending
        if not new:
            return
        lengths = np.fromiter(map(len, new), np.int32, len(new))
        flat = [token for tokens in new for token in tokens]
        rows = np.fromiter(map(self._rows.__getitem__, flat), np.int64, len(flat))
        owner = np.repeat(np.arange(len(new)), lengths)
        counts = np.zeros((len(new), len(COUNT_COLUMNS)), dtype=np.int32)
        np.add.at(counts, owner[rows >= 0], self.lexicon.matrix[rows[rows >= 0]])
        self._other_n_tokens = np.concatenate([self._other_n_tokens, lengths])
        self._other_counts = np.concatenate([self._other_counts, counts])
        self._other.n_seen += len(new)
        new.clear()

    def _per_chunk(self, chunks: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(n_tokens [d], counts [d, 10]) for distinct chunks."""
        plain, words = plain_chunk_words(chunks)
        plain = plain.to_numpy(zero_copy_only=False)
        n_tokens = np.zeros(len(chunks), dtype=np.int32)
        counts = np.zeros((len(chunks), len(COUNT_COLUMNS)), dtype=np.int32)
        # Plain chunks: one token (none for bare punctuation), looked up per distinct word.
        words = words.filter(plain)
        distinct_words = pc.unique(words)
        word_rows = np.fromiter(
            map(self._rows.__getitem__, distinct_words.to_pylist()), np.int64, len(distinct_words)
        )
        rows = word_rows[pc.index_in(words, value_set=distinct_words).to_numpy()]
        n_tokens[plain] = pc.not_equal(words, "").to_numpy(zero_copy_only=False)
        counts[np.flatnonzero(plain)[rows >= 0]] = self.lexicon.matrix[rows[rows >= 0]]
        # The others: through `chunk_tokens`, once per tagger.
        other = np.flatnonzero(~plain)
        others = chunks.take(pa.array(other)).to_pylist()
        cids = np.fromiter(map(self._other.__getitem__, others), np.int64, len(others))
        self._count_pending()
        n_tokens[other] = self._other_n_tokens[cids]
        counts[other] = self._other_counts[cids]
        return n_tokens, counts

    def count(self, texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """(counts [n, 10] in COUNT_COLUMNS order, n_tokens [n]) for a batch of poem texts."""
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        n = len(texts)
        counts = np.zeros((n, len(COUNT_COLUMNS)), dtype=np.int32)
        n_tokens = np.zeros(n, dtype=np.int32)
        if n == 0:
            return counts, n_tokens
        exact = needs_exact_path(texts).to_numpy(zero_copy_only=False)
        fast = np.flatnonzero(~exact)
        if len(fast):
            lists = marked_chunks(texts.take(pa.array(fast)) if exact.any() else texts)
            encoded = pc.dictionary_encode(lists.values)
            ids = encoded.indices.to_numpy(zero_copy_only=False)
            chunk_n_tokens, chunk_counts = self._per_chunk(encoded.dictionary)
            # Every text has >= 1 chunk (its line marks), so the offsets split `ids` per text.
            offsets = lists.offsets.to_numpy()
            poem_of = np.repeat(np.arange(len(fast)), np.diff(offsets))
            n_tokens[fast] = np.bincount(poem_of, chunk_n_tokens[ids], len(fast))
            hits = np.flatnonzero(chunk_counts.any(axis=1)[ids])  # most chunks hit nothing
            per_hit = chunk_counts[ids[hits]]
            for j in range(len(COUNT_COLUMNS)):
                counts[fast, j] = np.bincount(poem_of[hits], per_hit[:, j], len(fast))
        for i in np.flatnonzero(exact):  # rare: tabs, NBSP, \r and such in the text
            tokens = tokenize(texts[int(i)].as_py())
            n_tokens[i] = len(tokens)
            counts[i] = self._token_counts(tokens)
        if self.negation:
            # Negation breaks the independence of chunks: recount, line by line, the poems
            # that have a negator and a hit (token counts are unchanged).
            negated = pc.match_substring_regex(texts, _NEGATOR_TEXT, ignore_case=True)
            candidates = negated.to_numpy(zero_copy_only=False) & counts.any(axis=1)
            for i in np.flatnonzero(candidates):
                counts[i] = self._negated_counts(texts[int(i)].as_py())
        return counts, n_tokens


# Any text in which a negator could appear as a token (more than needed, never fewer).
_NEGATOR_TEXT = (
    r"\b(?:not|cannot|no|never|nor|without|none|nothing|neither|nobody|nowhere|naught|nought)\b"
    r"|n't|ne'er|’t\b"
)

# Chunk tokens, cached across poems for the negation recount.
_chunk_tokens = lru_cache(maxsize=1 << 18)(chunk_tokens)


@lru_cache(maxsize=8)
def _tagger(lemmatize: bool, negation: bool, lexicon: str) -> Tagger:
    """One tagger per process and mode, so its chunk cache carries over between batches."""
    return Tagger(lemmatize, negation, lexicon)


def _count_batch(
    texts: pa.Array, lemmatize: bool, negation: bool, lexicon: str
) -> tuple[np.ndarray, np.ndarray]:
    return _tagger(lemmatize, negation, lexicon).count(texts)


def _batches(texts: pa.Array, pieces: int) -> list[pa.Array]:
    """Contiguous slices of about BATCH_CHARS characters, and at least `pieces` of them."""
    ends = np.cumsum(pc.binary_length(texts).to_numpy(zero_copy_only=False), dtype=np.int64)
    total = int(ends[-1])
    n_batches = max(pieces, -(-total // BATCH_CHARS), 1)
    cuts = np.searchsorted(ends, np.arange(1, n_batches) * total / n_batches) + 1
    bounds = sorted({0, len(texts), *(int(c) for c in cuts if 0 < c < len(texts))})
    # concat_arrays copies: a bare slice would pickle (to a worker) the whole parent buffer.
    return [pa.concat_arrays([texts.slice(a, b - a)]) for a, b in pairwise(bounds)]


def count_texts(
    texts: pa.Array | pa.ChunkedArray,
    *,
    lemmatize: bool = False,
    negation: bool = False,
    lexicon: str = "nrc",
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(counts [n, 10], n_tokens [n]) for poem texts by `lexicon`, over `workers` processes
    (default: one per CPU) when there are enough lines to be worth starting them."""
    load_lexicon(lexicon)  # an unknown name fails here, not in a worker
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if len(texts) == 0:
        return np.zeros((0, len(COUNT_COLUMNS)), np.int32), np.zeros(0, np.int32)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise EmoverseError(f"workers must be at least 1, got {workers}")
    n_lines = len(texts) + int(pc.sum(pc.count_substring(texts, "\n")).as_py() or 0)
    parallel = workers > 1 and n_lines >= PARALLEL_MIN_LINES
    batches = _batches(texts, 2 * workers if parallel else 1)
    results: list[tuple[np.ndarray, np.ndarray]] = []
    if parallel:
        # "spawn": a fresh interpreter per worker, nothing inherited from a threaded parent
        # (Prefect's own threads), so no lock can be copied in a held state.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(batches)), mp_context=context) as pool:
            counted = pool.map(
                _count_batch, batches, repeat(lemmatize), repeat(negation), repeat(lexicon)
            )
            for batch, result in zip(batches, counted, strict=True):
                results.append(result)
                if on_progress is not None:
                    on_progress(len(batch))
    else:
        for batch in batches:
            results.append(_count_batch(batch, lemmatize, negation, lexicon))
            if on_progress is not None:
                on_progress(len(batch))
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def count_emotions(tokens: Iterable[str], lexicon: NRCLex | None = None) -> dict[str, int]:
    """The ten NRC counts for one token list, by NRCLex itself (the reference)."""
    lexicon = lexicon or NRCLex()
    lexicon.load_token_list(tokens)
    scores = lexicon.raw_emotion_scores
    return {c: int(scores.get(c, 0)) for c in COUNT_COLUMNS}


# --- labels and splits ------------------------------------------------------------------------


def _check_rule(min_hits: int, min_margin: int) -> None:
    if min_hits < 1 or min_margin < 1:
        raise EmoverseError(
            f"min_hits and min_margin must be at least 1, got {min_hits} and {min_margin}"
        )


def label_for(counts: dict[str, int], min_hits: int = 1, min_margin: int = 1) -> str:
    """The emotion with the highest count when that count is at least `min_hits` and beats
    every other emotion by at least `min_margin`; otherwise `neutral` (defaults: strictly the
    highest, and any hit)."""
    _check_rule(min_hits, min_margin)
    ranked = sorted(((counts[e], e) for e in EMOTIONS), key=lambda pair: -pair[0])
    (top, emotion), (second, _) = ranked[0], ranked[1]
    return emotion if top >= min_hits and top - second >= min_margin else NEUTRAL


def labels_for(counts: np.ndarray, min_hits: int = 1, min_margin: int = 1) -> np.ndarray:
    """`label_for` over a [n, 10] count matrix: indices into LABELS."""
    _check_rule(min_hits, min_margin)
    emotions = counts[:, : len(EMOTIONS)]
    if len(emotions) == 0:
        return np.zeros(0, dtype=np.int64)
    top = emotions.max(axis=1)
    second = np.partition(emotions, -2, axis=1)[:, -2]
    ok = (top >= min_hits) & (top - second >= min_margin)
    return np.where(ok, emotions.argmax(axis=1), LABELS.index(NEUTRAL))


def label_texts(
    texts: list[str],
    *,
    min_hits: int = 1,
    min_margin: int = 1,
    lemmatize: bool = False,
    negation: bool = False,
    lexicon: str = "nrc",
) -> list[str]:
    """The label of each text by the rule partitions are tagged with, judged by `lexicon`
    (in this process: meant for generated poems, not a corpus)."""
    counts, _ = count_texts(
        pa.array(texts, pa.string()),
        lemmatize=lemmatize,
        negation=negation,
        lexicon=lexicon,
        workers=1,
    )
    return [LABELS[i] for i in labels_for(counts, min_hits, min_margin)]


def judge_agreement(texts: list[str], nrc_labels: list[str]) -> dict[str, Any]:
    """How often Empath, with the default rule, gives real poems the label the NRC lexicon
    gave them: overall, on poems NRC gives an emotion, per NRC label, and Cohen's kappa. The
    ceiling against which a model's Empath fidelity reads: a perfect NRC child would score
    about this under Empath."""
    counts, _ = count_texts(pa.array(texts, pa.string()), lexicon="empath")
    empath = [LABELS[i] for i in labels_for(counts)]
    n = len(texts)
    agree = sum(a == b for a, b in zip(nrc_labels, empath, strict=True))
    emotional = [(a, b) for a, b in zip(nrc_labels, empath, strict=True) if a != NEUTRAL]
    per_label = {}
    for label in LABELS:
        pairs = [b for a, b in zip(nrc_labels, empath, strict=True) if a == label]
        per_label[label] = {
            "poems": len(pairs),
            "empath_agrees": sum(b == label for b in pairs),
        }
    # Cohen's kappa: agreement beyond what the two label distributions give by chance.
    chance = sum(
        (nrc_labels.count(label) / n) * (empath.count(label) / n) for label in LABELS
    ) if n else 0.0
    observed = agree / n if n else 0.0
    return {
        "poems": n,
        "agreement": observed,
        "agreement_on_emotional": (
            sum(a == b for a, b in emotional) / len(emotional) if emotional else 0.0
        ),
        "emotional_poems": len(emotional),
        "empath_neutral": empath.count(NEUTRAL) / n if n else 0.0,
        "kappa": (observed - chance) / (1 - chance) if chance < 1 else 0.0,
        "per_label": per_label,
    }


def split_for(poem_id: str) -> str:
    """train/validation/test (90/5/5) from a hash of the poem id: stable across runs and
    independent of which other poems are in the corpus."""
    bucket = int.from_bytes(hashlib.sha256(poem_id.encode()).digest()[:4], "big") % 100
    return "validation" if bucket < 5 else "test" if bucket < 10 else "train"


def tag_table(
    poems: pa.Table,
    *,
    min_hits: int = 1,
    min_margin: int = 1,
    lemmatize: bool = False,
    negation: bool = False,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> pa.Table:
    """Add the ten counts, `n_tokens`, `label` and `split` to a table of poems."""
    _check_rule(min_hits, min_margin)
    counts, n_tokens = count_texts(
        poems.column("text"),
        lemmatize=lemmatize,
        negation=negation,
        workers=workers,
        on_progress=on_progress,
    )
    labels = np.asarray(LABELS, dtype=object)[labels_for(counts, min_hits, min_margin)]
    columns: dict[str, Any] = {name: poems.column(name) for name in POEM_SCHEMA.names}
    for j, name in enumerate(COUNT_COLUMNS):
        columns[name] = pa.array(counts[:, j], pa.int32())
    columns["n_tokens"] = pa.array(n_tokens, pa.int32())
    columns["label"] = pa.array(labels.tolist(), pa.string())
    columns["split"] = pa.array([split_for(p) for p in poems.column("poem_id").to_pylist()])
    return pa.table(columns, schema=TAGGED_SCHEMA)


# --- versioned partitions ---------------------------------------------------------------------

_VERSION = re.compile(r"v(\d{6,})")


def versions_dir(partitions_dir: Path) -> Path:
    """Where the versions behind the `partitions_dir` link live."""
    partitions_dir = Path(partitions_dir)
    return partitions_dir.with_name(f"{partitions_dir.name}.versions")


def list_versions(partitions_dir: Path) -> list[str]:
    """The complete versions on disk, oldest first."""
    store = versions_dir(partitions_dir)
    if not store.is_dir():
        return []
    names = [p.name for p in store.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir()]
    return sorted(names, key=lambda name: int(name[1:]))


def read_manifest(partitions_dir: Path) -> dict[str, Any] | None:
    """The current version's manifest, or None before the first tagged run."""
    path = Path(partitions_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


@contextmanager
def _writer_lock(store: Path) -> Iterator[None]:
    """One writer at a time per partitions dir; the OS drops the lock if the writer dies."""
    with open(store / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_labels(tagged: pa.Table, folder: Path) -> dict[str, dict[str, int]]:
    """One Parquet file per label (all nine, empty ones too); rows per label and split."""
    folder.mkdir(parents=True)
    by_split: dict[str, dict[str, int]] = {}
    labels = tagged.column("label")
    for label in LABELS:
        rows = tagged.filter(pc.equal(labels, label))
        part = folder / f"emotion={label}"
        part.mkdir()
        pq.write_table(rows, part / "part-0.parquet")
        _fsync(part / "part-0.parquet")
        tally = {
            v["values"]: v["counts"] for v in pc.value_counts(rows.column("split")).to_pylist()
        }
        by_split[label] = {s: int(tally.get(s, 0)) for s in SPLITS}
    return by_split


def _switch(link: Path, target: Path) -> None:
    """Point `link` at `target` in one rename. A real folder there (the layout before
    versions) is first moved into the store as version v000000."""
    tmp = link.with_name(f".{link.name}.link-{uuid.uuid4().hex[:8]}")
    os.symlink(os.path.relpath(target, link.parent), tmp)
    try:
        if link.is_dir() and not link.is_symlink():
            legacy = target.parent / "v000000"
            if legacy.exists():
                shutil.rmtree(legacy)
            os.replace(link, legacy)
        os.replace(tmp, link)
    finally:
        if tmp.is_symlink():
            tmp.unlink()
    _fsync(link.parent)


def _drop_leftovers(partitions_dir: Path, store: Path) -> None:
    """Remove what killed writers left: temp folders and temp links. Only under the lock,
    where no other writer is live."""
    for leftover in store.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for link in partitions_dir.parent.glob(f".{partitions_dir.name}.link-*"):
        link.unlink(missing_ok=True)


def _prune(partitions_dir: Path, store: Path, keep: int, current: str) -> None:
    versions = list_versions(partitions_dir)
    for old in versions[: max(0, len(versions) - keep)]:
        if old != current:
            shutil.rmtree(store / old, ignore_errors=True)


def write_version(
    tagged: pa.Table,
    partitions_dir: Path,
    *,
    info: dict[str, Any] | None = None,
    keep: int = KEEP_VERSIONS,
) -> dict[str, Any]:
    """Write `tagged` as a new version of the nine partitions and make it current; returns its
    manifest (`info` merged in). Keeps the newest `keep` versions."""
    if keep < 1:
        raise EmoverseError(f"keep must be at least 1, got {keep}")
    partitions_dir = Path(partitions_dir)
    store = versions_dir(partitions_dir)
    store.mkdir(parents=True, exist_ok=True)
    with _writer_lock(store):
        _drop_leftovers(partitions_dir, store)
        existing = list_versions(partitions_dir)
        version = f"v{(int(existing[-1][1:]) if existing else 0) + 1:06d}"
        tmp = store / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
        try:
            splits = _write_labels(tagged, tmp)
            lexicon = load_lexicon()
            manifest: dict[str, Any] = {
                "version": version,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "tagger_version": TAGGER_VERSION,
                "lexicon": {
                    "file": "nrclex/data/nrc_en.json",
                    "nrclex": nrclex.__version__,
                    "sha256": lexicon.sha256,
                },
            }
            manifest.update(info or {})
            manifest.update(
                version=version,
                rows=tagged.num_rows,
                counts={label: sum(splits[label].values()) for label in LABELS},
                splits=splits,
                files={label: f"emotion={label}/part-0.parquet" for label in LABELS},
            )
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
            _fsync(tmp / MANIFEST_NAME)
            _fsync(tmp)
            os.rename(tmp, store / version)  # complete versions only ever carry a vNNNNNN name
            _fsync(store)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _switch(partitions_dir, store / version)
        _prune(partitions_dir, store, keep, current=version)
    return manifest


def write_partitions(tagged: pa.Table, partitions_dir: Path) -> dict[str, int]:
    """`write_version` without run details; returns the row count per label."""
    return write_version(tagged, partitions_dir)["counts"]


def read_partition(partitions_dir: Path, label: str, split: str | None = None) -> pa.Table:
    """Read one label's rows (optionally one split) with the declared schema."""
    table = pq.read_table(Path(partitions_dir) / f"emotion={label}", schema=TAGGED_SCHEMA)
    if split is not None:
        table = table.filter(pc.equal(table.column("split"), split))
    return table


# --- the stage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagResult:
    counts: dict[str, int]  # poems per label
    version: str
    skipped: bool  # True: the current version already has this input and these options
    manifest: dict[str, Any]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tag_poems(
    poems_file: Path,
    partitions_dir: Path,
    *,
    min_hits: int = 1,
    min_margin: int = 1,
    lemmatize: bool = False,
    negation: bool = False,
    workers: int | None = None,
    keep: int = KEEP_VERSIONS,
    force: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> TagResult:
    """Tag the poems in `poems_file` into a new version of `partitions_dir`, unless the
    current version was made from the same file with the same tagger, lexicon and options
    (then it is kept, `skipped` is True, and nothing is read or written). The new manifest
    says how many poems changed label against the version it replaces."""
    _check_rule(min_hits, min_margin)
    poems_file = Path(poems_file)
    if not poems_file.is_file():
        raise MissingStageOutputError(f"no poems at {poems_file}; run `emoverse ingest` first")
    options = {
        "min_hits": min_hits,
        "min_margin": min_margin,
        "lemmatize": lemmatize,
        "negation": negation,
    }
    input_sha = _sha256_file(poems_file)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "input": input_sha,
                "tagger": TAGGER_VERSION,
                "lexicon": load_lexicon().sha256,
                "options": options,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    current = read_manifest(partitions_dir)
    if not force and current is not None and current.get("fingerprint") == fingerprint:
        return TagResult(current["counts"], current["version"], True, current)

    started = time.perf_counter()
    poems = pq.read_table(poems_file).select(POEM_SCHEMA.names).cast(POEM_SCHEMA)
    tagged = tag_table(
        poems,
        min_hits=min_hits,
        min_margin=min_margin,
        lemmatize=lemmatize,
        negation=negation,
        workers=workers,
        on_progress=on_progress,
    )
    elapsed = time.perf_counter() - started
    changes = label_changes(partitions_dir, tagged) if current is not None else None
    n_lines = int(pc.sum(poems.column("n_lines")).as_py() or 0)
    manifest = write_version(
        tagged,
        partitions_dir,
        keep=keep,
        info={
            "fingerprint": fingerprint,
            "options": options,
            "tokens": TOKENS_LEMMAS if lemmatize else TOKENS_SURFACE,
            "input": {"file": str(poems_file), "sha256": input_sha, "poems": poems.num_rows},
            "lines": n_lines,
            "n_tokens": int(pc.sum(tagged.column("n_tokens")).as_py() or 0),
            "tag_seconds": round(elapsed, 3),
            "label_changes": changes,
        },
    )
    return TagResult(manifest["counts"], manifest["version"], False, manifest)


def label_changes(partitions_dir: Path, tagged: pa.Table) -> dict[str, Any] | None:
    """How the labels of `tagged` differ from the current version's, poem by poem: the
    version compared with, poems in both, how many changed, and the most common moves."""
    manifest = read_manifest(partitions_dir)
    if manifest is None:
        return None
    before: dict[str, str] = {}
    for label in LABELS:
        try:
            old = pq.read_table(
                Path(partitions_dir) / f"emotion={label}", columns=["poem_id"]
            ).column("poem_id")
        except (OSError, pa.ArrowInvalid):
            return None  # an unreadable old version: nothing to compare with
        before.update(dict.fromkeys(old.to_pylist(), label))
    moves: dict[str, int] = {}
    compared = changed = 0
    for poem_id, label in zip(
        tagged.column("poem_id").to_pylist(), tagged.column("label").to_pylist(), strict=True
    ):
        old_label = before.get(poem_id)
        if old_label is None:
            continue
        compared += 1
        if old_label != label:
            changed += 1
            move = f"{old_label}->{label}"
            moves[move] = moves.get(move, 0) + 1
    top = dict(sorted(moves.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
    return {"against": manifest["version"], "compared": compared, "changed": changed, "moves": top}


def tag_report(partitions_dir: Path) -> str:
    """The current version's label distribution per split, from its manifest."""
    manifest = read_manifest(partitions_dir)
    if manifest is None:
        raise MissingStageOutputError(
            f"no tagged partitions at {partitions_dir}; run `emoverse tag` first"
        )
    counts, splits = manifest["counts"], manifest["splits"]
    total = sum(counts.values())
    options = manifest.get("options", {})
    lines = [
        f"partitions {manifest['version']} ({manifest.get('created', '?')}): {total} poems, "
        f"tagger {manifest['tagger_version']}, {manifest.get('tokens', TOKENS_SURFACE)} tokens, "
        f"min_hits {options.get('min_hits', 1)}, min_margin {options.get('min_margin', 1)}, "
        f"negation {'on' if options.get('negation') else 'off'}",
        f"lexicon sha256 {manifest['lexicon']['sha256'][:16]}",
        "",
        f"{'label':<13}{'poems':>8}{'share':>8}" + "".join(f"{s:>12}" for s in SPLITS),
    ]
    for label in LABELS:
        share = counts[label] / total if total else 0.0
        lines.append(
            f"{label:<13}{counts[label]:>8}{share:>8.1%}"
            + "".join(f"{splits[label][s]:>12}" for s in SPLITS)
        )
    lines.append(
        f"{'total':<13}{total:>8}{1 if total else 0:>8.1%}"
        + "".join(f"{sum(splits[label][s] for label in LABELS):>12}" for s in SPLITS)
    )
    changes = manifest.get("label_changes")
    if changes:
        share = changes["changed"] / changes["compared"] if changes["compared"] else 0.0
        moves = ", ".join(f"{move} {n}" for move, n in list(changes["moves"].items())[:5])
        lines += [
            "",
            f"labels changed against {changes['against']}: {changes['changed']} of "
            f"{changes['compared']} poems ({share:.1%})" + (f"; most: {moves}" if moves else ""),
        ]
    elif "label_changes" in manifest:
        lines += ["", "labels changed: no earlier version to compare with"]
    return "\n".join(lines)
