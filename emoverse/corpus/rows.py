"""One book to POEM_SCHEMA rows and reject rows; dedup across books."""

import hashlib
from collections.abc import Iterable

from emoverse.corpus.catalog import parse_rdf
from emoverse.corpus.poems import Drop, split_with_drops
from emoverse.corpus.reasons import (
    BYTES_REPLACED,
    EMPTY,
    MATTER_DROPPED,
    MIN_VERSE_SHARE,
    MOSTLY_PROSE,
    NOT_POETRY,
    BookRejectedError,
)
from emoverse.corpus.text import (
    decode_book_counted,
    normalize_for_dedup,
    parse_metadata,
    strip_boilerplate,
)


def reject_row(
    gutenberg_id: int,
    reason: str,
    detail: str,
    poem_title: str | None = None,
    passage_index: int | None = None,
) -> dict:
    return {
        "gutenberg_id": int(gutenberg_id),
        "poem_title": poem_title,
        "passage_index": passage_index,
        "reason": reason,
        "detail": detail,
    }


def book_rows_and_rejects(
    gutenberg_id: int,
    raw: bytes,
    *,
    max_lines: int,
    metadata: tuple[str | None, str | None] | None,
    rdf: bytes | None = None,
) -> tuple[list[dict], list[dict]]:
    """(POEM_SCHEMA rows, passage-level reject rows) of one raw book; raises BookRejectedError
    for a book that yields nothing."""
    text, replaced = decode_book_counted(raw)
    if metadata is None:
        title, author = parse_metadata(text)
        if (title is None or author is None) and rdf is not None:
            rdf_title, rdf_author = parse_rdf(rdf)
            title, author = title or rdf_title, author or rdf_author
    else:
        title, author = metadata
    body = strip_boilerplate(text)
    if not body.strip():
        raise BookRejectedError(EMPTY, "no text between the Gutenberg header and footer")
    passages, drops = split_with_drops(body, max_lines)
    rejects = _drop_rejects(gutenberg_id, drops)
    if replaced:
        detail = f"{replaced} invalid UTF-8 sequences replaced with U+FFFD"
        rejects.append(reject_row(gutenberg_id, BYTES_REPLACED, detail))
    lines = sum(1 for line in body.split("\n") if line.strip())
    if not passages:
        raise BookRejectedError(NOT_POETRY, f"no poem found in {lines} lines of text")
    verse = sum(p.text.count("\n") + 1 - p.text.count("\n\n") for p in passages)
    if verse < MIN_VERSE_SHARE * lines:
        # Prose poems (Gitanjali) or verse reflowed into paragraphs by a bad transcription
        # (Goldsmith 3545): the few "poems" found are scraps.
        raise BookRejectedError(NOT_POETRY, f"only {verse} of {lines} lines read as verse")
    sha = hashlib.sha256(raw).hexdigest()
    rows = []
    for i, passage in enumerate(passages):
        rows.append(
            {
                "poem_id": f"{gutenberg_id}-{i:05d}",
                "gutenberg_id": int(gutenberg_id),
                "book_title": title,
                "author": author,
                "poem_title": passage.poem_title,
                "passage_index": passage.passage_index,
                "text": passage.text,
                "n_lines": sum(1 for line in passage.text.split("\n") if line.strip()),
                "n_words": len(passage.text.split()),
                "source_sha256": sha,
            }
        )
    return rows, rejects


def _drop_rejects(gutenberg_id: int, drops: list[Drop]) -> list[dict]:
    """Reject rows for what the splitter left out: one summary row for front and back matter
    (prose, contents, notes: not worth a row each), one row per titled section that held some
    verse but was dropped as mostly prose (it may be a poem with a long prose note)."""
    rows = []
    matter = [d for d in drops if d.kind != MOSTLY_PROSE]
    if matter:
        lines = sum(d.lines for d in matter)
        detail = f"{len(matter)} blocks, {lines} lines"
        rows.append(reject_row(gutenberg_id, MATTER_DROPPED, detail))
    for d in drops:
        if d.kind == MOSTLY_PROSE:
            rows.append(reject_row(gutenberg_id, MOSTLY_PROSE, d.detail, d.title))
    return rows


def book_to_rows(
    gutenberg_id: int,
    raw: bytes,
    *,
    max_lines: int = 40,
    metadata: tuple[str | None, str | None] | None = None,
) -> list[dict]:
    """Rows matching POEM_SCHEMA for one raw book file; poem_id is stable across runs.
    `metadata` (title, author), e.g. from the catalog, replaces what the header says. A book
    that yields no poem gives no rows (ingest_books records why)."""
    try:
        return book_rows_and_rejects(gutenberg_id, raw, max_lines=max_lines, metadata=metadata)[0]
    except BookRejectedError:
        return []


def dedupe_into(rows: Iterable[dict], seen: set[str]) -> list[dict]:
    kept = []
    for row in rows:
        key = normalize_for_dedup(row["text"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def dedupe_rows(rows: list[dict]) -> list[dict]:
    """Keep the first row of each normalised text (1062 contains 1065; 12242 contains 2678
    and 2679)."""
    return dedupe_into(rows, set())
