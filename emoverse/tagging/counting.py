"""The ten counts per poem, vectorised over a batch: tokens (`emoverse.tagging.tokenize`)
looked up in a lexicon, with optional lemmas and negation."""


import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from itertools import pairwise, repeat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from nrclex import NRCLex

from emoverse.errors import EmoverseError
from emoverse.schema import COUNT_COLUMNS
from emoverse.tagging.lexicon import TOKENS_LEMMAS, TOKENS_SURFACE, load_lexicon, noun_lemmatizer
from emoverse.tagging.tokenize import (
    BOL,
    EOL,
    chunk_tokens,
    line_tokens,
    marked_chunks,
    needs_exact_path,
    plain_chunk_words,
    tokenize,
)

# Bump whenever the same poems and options could give different rows.
TAGGER_VERSION = "3"  # 3: NLTKWordTokenizer (splits ’ “ ” —); lemminflect lemmas; negation
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
    `emoverse.tagging.tokenize`) and hashes them; per distinct chunk, the plain ones (a word in
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


