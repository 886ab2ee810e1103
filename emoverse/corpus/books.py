"""Many books at once: fetch them in parallel (through the raw cache), parse them in the
order asked, dedupe across them, and collect every reject with its reason."""

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow as pa

from emoverse.corpus.fetch import (
    DEFAULT_PARALLEL,
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    Abort,
    Aborted,
    FetchedBook,
    RetryPolicy,
    book_paths,
    check_mirror,
    get_book,
    get_rdf,
    is_url,
    new_client,
)
from emoverse.corpus.reasons import DUPLICATES, NOT_FOUND, BookRejectedError
from emoverse.corpus.rows import book_rows_and_rejects, dedupe_into, reject_row
from emoverse.corpus.text import decode_book, parse_metadata
from emoverse.errors import BookNotFoundError, EmoverseError, MirrorNotFoundError
from emoverse.schema import POEM_SCHEMA, REJECT_SCHEMA


@dataclass(frozen=True)
class IngestResult:
    poems: pa.Table  # POEM_SCHEMA
    rejects: pa.Table  # REJECT_SCHEMA
    fetched: int  # books downloaded (or read from a local folder mirror) in this run
    from_cache: int  # books read from the raw cache, their checksum verified
    ingested: tuple[int, ...] = field(default=())  # ids not rejected as a whole, in order

    @property
    def books(self) -> int:
        return len(self.ingested)


def _fetch_worker(
    mirror: str,
    gutenberg_id: int,
    client: httpx.Client | None,
    retry: RetryPolicy,
    cache_dir: Path | None,
    abort: Abort,
    want_rdf: bool,
) -> FetchedBook:
    try:
        book = get_book(mirror, gutenberg_id, client, retry, cache_dir, abort)
    except MirrorNotFoundError as exc:
        abort.set(exc)  # the other downloads would only wait out their retries
        raise
    if want_rdf:
        try:
            title, author = parse_metadata(decode_book(book.raw))
        except BookRejectedError:
            return book  # rejected when parsed; no metadata needed
        if title is None or author is None:
            rdf = get_rdf(mirror, gutenberg_id, client, cache_dir)
            book = FetchedBook(book.gutenberg_id, book.raw, book.source, book.from_cache, rdf)
    return book


def ingest_books(
    mirror: str,
    ids: Sequence[int],
    *,
    cache_dir: Path | None = None,
    catalog: Mapping[int, tuple[str | None, str | None]] | None = None,
    on_book: Callable[[int, int], None] | None = None,
    max_lines: int = 40,
    max_parallel: int = DEFAULT_PARALLEL,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> IngestResult:
    """Fetch (at most `max_parallel` at a time, through `cache_dir`), parse and dedupe books.

    A book that is missing, fails to download after retries, is an HTML page, cannot be
    decoded or yields no poem goes to the rejects with its reason; the others are kept, in
    the order of `ids`. `catalog` maps ids to (title, author) and wins over the book's header
    (the RDF record is the fallback when the header lacks them). on_book(gutenberg_id,
    n_rows) runs for every id in order, with the rows it added after dedup (0 if rejected).

    Raises MirrorNotFoundError when the mirror cannot be reached at all, and
    BookNotFoundError (every id missing) or BookRejectedError when no book could be ingested.
    """
    if max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    check_mirror(mirror)
    ids = list(dict.fromkeys(int(i) for i in ids))  # a repeated id would only add duplicates
    rows: list[dict] = []
    rejects: list[dict] = []
    ingested: list[int] = []
    book_rejects: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    fetched = from_cache = 0
    abort = Abort()
    # One connection pool for all books (none needed for a local folder).
    client_cm = new_client(timeout, max_parallel) if is_url(mirror) else nullcontext()
    with client_cm as client, ThreadPoolExecutor(max_parallel, "gutenberg-fetch") as pool:
        futures: list[Future[FetchedBook]] = [
            pool.submit(
                _fetch_worker,
                mirror,
                gid,
                client,
                retry,
                cache_dir,
                abort,
                catalog is None or gid not in catalog,
            )
            for gid in ids
        ]
        try:
            # Parsing in id order while later books download keeps the output deterministic.
            for gid, future in zip(ids, futures, strict=True):
                kept = 0
                reject: tuple[int, str, str] | None = None
                try:
                    book = future.result()
                    fetched += not book.from_cache
                    from_cache += book.from_cache
                    meta = catalog.get(gid) if catalog is not None else None
                    book_rows, passage_rejects = book_rows_and_rejects(
                        gid, book.raw, max_lines=max_lines, metadata=meta, rdf=book.rdf
                    )
                except BookNotFoundError:
                    reject = (gid, NOT_FOUND, f"none of {', '.join(book_paths(gid))} at {mirror}")
                except BookRejectedError as exc:
                    reject = (gid, exc.reason, exc.detail)
                else:
                    new = dedupe_into(book_rows, seen)
                    kept = len(new)
                    rows.extend(new)
                    rejects.extend(passage_rejects)
                    if kept < len(book_rows):
                        n = len(book_rows) - kept
                        detail = f"{n} of {len(book_rows)} passages already ingested"
                        rejects.append(reject_row(gid, DUPLICATES, detail))
                    ingested.append(gid)
                if reject is not None:
                    book_rejects.append(reject)
                    rejects.append(reject_row(*reject))
                if on_book is not None:
                    on_book(gid, kept)
        except BaseException as exc:
            abort.set()
            for f in futures:
                f.cancel()
            if isinstance(exc, Aborted) and abort.error is not None:
                # This book stopped because another download found the mirror unreachable.
                raise abort.error from None
            raise
    if not ingested:
        _raise_nothing_ingested(mirror, book_rejects)
    return IngestResult(
        poems=pa.Table.from_pylist(rows, schema=POEM_SCHEMA),
        rejects=pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA),
        fetched=fetched,
        from_cache=from_cache,
        ingested=tuple(ingested),
    )


def _raise_nothing_ingested(mirror: str, book_rejects: list[tuple[int, str, str]]) -> None:
    if not book_rejects:
        raise EmoverseError("no Gutenberg ids given")
    names = ", ".join(str(gid) for gid, _, _ in book_rejects)
    if all(reason == NOT_FOUND for _, reason, _ in book_rejects):
        which = "book" if len(book_rejects) == 1 else "books"
        raise BookNotFoundError(f"Gutenberg {which} {names} not found at {mirror}")
    why = "; ".join(f"{gid}: {reason} ({detail})" for gid, reason, detail in book_rejects)
    raise BookRejectedError(book_rejects[0][1], f"no book could be ingested from {mirror}: {why}")
