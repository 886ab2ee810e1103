"""The corpus stage: Project Gutenberg books to poems, in the order the work happens.

    catalog.py   which books are poetry; titles and authors (catalog CSV, RDF records)
    fetch.py     one book from a mirror (URL or folder), retried, through the raw cache
    text.py      raw bytes to clean text: decoding, header and footer, title and author
    poems.py     the text cut into poems and passages (the splitting heuristics)
    rows.py      one book to POEM_SCHEMA rows and reject rows; dedup
    books.py     many books at once: parallel fetch, in-order parse, dedup across books
    stage.py     `ingest`, the stage's entry: keyed, so an unchanged corpus is not redone;
                 the Parquet writers and the per-book report
    reasons.py   why a book or passage was left out

Pure logic: no Prefect here (tasks/ingest.py wraps `ingest`).
"""

from emoverse.corpus.books import IngestResult, ingest_books
from emoverse.corpus.catalog import (
    catalog_metadata,
    display_name,
    is_poetry_entry,
    parse_rdf,
    poetry_ids_from_catalog,
)
from emoverse.corpus.fetch import (
    DEFAULT_PARALLEL,
    RetryPolicy,
    book_path,
    book_paths,
    cache_store,
    cached_file,
    check_mirror,
    fetch_book,
    looks_like_html,
)
from emoverse.corpus.poems import PoemPassage, split_poems
from emoverse.corpus.reasons import (
    BOOK_REJECTS,
    BYTES_REPLACED,
    DUPLICATES,
    EMPTY,
    ENCODING,
    FETCH_FAILED,
    HTML_PAGE,
    MATTER_DROPPED,
    MOSTLY_PROSE,
    NOT_FOUND,
    NOT_POETRY,
    REJECT_REASONS,
    BookRejectedError,
)
from emoverse.corpus.rows import book_to_rows, dedupe_rows
from emoverse.corpus.stage import (
    IngestSummary,
    ingest,
    ingest_key,
    ingest_report,
    read_ingest_record,
    write_poems,
    write_rejects,
)
from emoverse.corpus.text import decode_book, normalize_for_dedup, parse_metadata, strip_boilerplate

__all__ = [
    "BOOK_REJECTS",
    "BYTES_REPLACED",
    "DEFAULT_PARALLEL",
    "DUPLICATES",
    "EMPTY",
    "ENCODING",
    "FETCH_FAILED",
    "HTML_PAGE",
    "MATTER_DROPPED",
    "MOSTLY_PROSE",
    "NOT_FOUND",
    "NOT_POETRY",
    "REJECT_REASONS",
    "BookRejectedError",
    "IngestResult",
    "IngestSummary",
    "PoemPassage",
    "RetryPolicy",
    "book_path",
    "book_paths",
    "book_to_rows",
    "cache_store",
    "cached_file",
    "catalog_metadata",
    "check_mirror",
    "decode_book",
    "dedupe_rows",
    "display_name",
    "fetch_book",
    "ingest",
    "ingest_books",
    "ingest_key",
    "ingest_report",
    "is_poetry_entry",
    "looks_like_html",
    "normalize_for_dedup",
    "parse_metadata",
    "parse_rdf",
    "poetry_ids_from_catalog",
    "read_ingest_record",
    "split_poems",
    "strip_boilerplate",
    "write_poems",
    "write_rejects",
]
