"""The ingest stage: fetch books in parallel (through the raw cache), parse and dedupe them,
write the poems and the rejects as Parquet; `ingest` is the entry point, keyed so that an
unchanged corpus is not parsed again."""

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from emoverse.atomic import atomic_path
from emoverse.corpus.books import ingest_books
from emoverse.corpus.catalog import catalog_metadata
from emoverse.corpus.fetch import DEFAULT_PARALLEL, cached_file
from emoverse.corpus.reasons import BOOK_REJECTS, BYTES_REPLACED
from emoverse.done import already_done, read_record, write_record
from emoverse.errors import MissingStageOutputError
from emoverse.paths import INGEST_RECORD, POEMS_FILE, REJECTS_FILE, RunPaths
from emoverse.schema import POEM_SCHEMA, REJECT_SCHEMA

# Bump when parsing or splitting changes, so that cached ingests are redone.
SPLITTER_VERSION = "1"


def ingest_key(
    ids: Sequence[int],
    cache_dir: Path,
    *,
    catalog: Mapping[int, tuple[str | None, str | None]] | None = None,
    max_lines: int = 40,
) -> str | None:
    """Names one ingest by what it reads: the ids, the verified checksum of each raw book in the
    cache, the catalog's metadata and the splitter's version. None when a book is not in the
    cache yet (the ingest has to fetch, so it cannot be known to be unchanged)."""
    h = hashlib.sha256(json.dumps([SPLITTER_VERSION, max_lines]).encode())
    for gid in dict.fromkeys(int(i) for i in ids):
        raw = cached_file(cache_dir, f"{gid}.txt")
        if raw is None:
            return None
        rdf = cached_file(cache_dir, f"{gid}.rdf")  # fetched for books whose header lacks names
        meta = catalog.get(gid) if catalog is not None else None
        digests = [hashlib.sha256(b).hexdigest() if b else None for b in (raw, rdf)]
        h.update(json.dumps([gid, *digests, meta]).encode())
    return h.hexdigest()


def read_ingest_record(poems_dir: Path) -> dict | None:
    """What the ingest that wrote `poems_dir` recorded (its key and summary), if anything."""
    return read_record(Path(poems_dir) / INGEST_RECORD)


def write_poems(table: pa.Table, poems_dir: Path) -> Path:
    """Write poems_dir/poems.parquet atomically with POEM_SCHEMA; return its path."""
    return _write_table(table, POEM_SCHEMA, Path(poems_dir) / POEMS_FILE)


def write_rejects(table: pa.Table, poems_dir: Path) -> Path:
    """Write poems_dir/rejects.parquet atomically with REJECT_SCHEMA; return its path."""
    return _write_table(table, REJECT_SCHEMA, Path(poems_dir) / REJECTS_FILE)


def _write_table(table: pa.Table, schema: pa.Schema, final: Path) -> Path:
    with atomic_path(final) as tmp:
        pq.write_table(table.select(schema.names).cast(schema), tmp)
    return final


def ingest_report(poems_dir: Path) -> str:
    """A per-book table of what the last ingest wrote under poems_dir: id, title, poems,
    passages, lines, reject rows and the book-level reject reason, then a total line."""
    poems_file = Path(poems_dir) / POEMS_FILE
    if not poems_file.is_file():
        raise MissingStageOutputError(f"no poems at {poems_file}: run `emoverse ingest` first")
    poems = pq.read_table(
        poems_file, columns=["gutenberg_id", "book_title", "passage_index", "n_lines"]
    ).to_pylist()
    rejects_file = Path(poems_dir) / REJECTS_FILE
    rejects = pq.read_table(rejects_file).to_pylist() if rejects_file.is_file() else []

    books: dict[int, dict] = {}

    def book(gid: int) -> dict:
        return books.setdefault(
            gid,
            {
                "title": None,
                "poems": 0,
                "passages": 0,
                "lines": 0,
                "rejects": 0,
                "why": "",
                "note": "",
            },
        )

    for row in poems:
        b = book(row["gutenberg_id"])
        b["title"] = b["title"] or row["book_title"]
        b["poems"] += row["passage_index"] == 0
        b["passages"] += 1
        b["lines"] += row["n_lines"]
    for row in rejects:
        b = book(row["gutenberg_id"])
        b["rejects"] += 1
        if row["reason"] in BOOK_REJECTS:
            b["why"] = row["reason"]
        elif row["reason"] == BYTES_REPLACED:
            b["note"] = row["detail"]
    header = f"{'id':>8}  {'title':<40} {'poems':>6} {'passages':>8} {'lines':>7} {'rejects':>7}"
    out = [header, "-" * len(header)]
    for gid, b in books.items():
        title = (b["title"] or "-")[:40]
        out.append(
            f"{gid:>8}  {title:<40} {b['poems']:>6} {b['passages']:>8} {b['lines']:>7} "
            f"{b['rejects']:>7}"
            + (f"  {b['why']}" if b["why"] else "")
            + (f"  ({b['note']})" if b["note"] else "")
        )
    kept = sum(1 for b in books.values() if not b["why"])
    out.append("-" * len(header))
    total = f"{kept} of {len(books)} books"
    out.append(
        f"{'total':>8}  {total:<40} {sum(b['poems'] for b in books.values()):>6} "
        f"{len(poems):>8} {sum(b['lines'] for b in books.values()):>7} {len(rejects):>7}"
    )
    return "\n".join(out)


@dataclass(frozen=True)
class IngestSummary:
    """What an ingest wrote (the `ingest` flow's result, and the record an unchanged rerun
    reuses)."""

    path: str  # poems.parquet
    rejects_path: str  # rejects.parquet
    books: int  # books ingested
    poems: int  # poem rows (passages of long poems count one each)
    rejected_books: int
    rejects: int  # reject rows
    fetched: int  # books downloaded in this run
    from_cache: int  # books read from the raw cache
    reused: bool = False  # nothing changed since the last ingest: its output was kept
    left_out: tuple[tuple[int, str, str], ...] = ()  # (id, reason, detail) of rejected books

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "left_out"}


def ingest(
    mirror: str,
    ids: Sequence[int],
    paths: RunPaths,
    *,
    catalog_csv: Path | None = None,
    max_parallel: int = DEFAULT_PARALLEL,
    on_book: Callable[[int, int], None] | None = None,
) -> IngestSummary:
    """The ingest stage: fetch `ids` from `mirror` through `paths.raw`, split them into poems
    and write `paths.poems_file` and `paths.rejects_file`. When every book is cached and
    unchanged since the poems were written (same ids, checksums, catalog and splitter),
    nothing is parsed again and the earlier summary comes back with `reused`."""
    # The catalog gives cleaner titles and authors than old files' headers.
    metadata = catalog_metadata(Path(catalog_csv)) if catalog_csv else None
    record_file = paths.poems / INGEST_RECORD
    key = ingest_key(ids, paths.raw, catalog=metadata)
    if (done := already_done(record_file, key, paths.poems_file)) is not None:
        return IngestSummary(**{**done, "fetched": 0, "from_cache": 0, "reused": True})
    result = ingest_books(
        mirror,
        ids,
        cache_dir=paths.raw,
        catalog=metadata,
        max_parallel=max_parallel,
        on_book=on_book,
    )
    summary = IngestSummary(
        path=str(write_poems(result.poems, paths.poems)),
        rejects_path=str(write_rejects(result.rejects, paths.poems)),
        books=result.books,
        poems=result.poems.num_rows,
        rejected_books=len(set(ids)) - result.books,
        rejects=result.rejects.num_rows,
        fetched=result.fetched,
        from_cache=result.from_cache,
        left_out=tuple(
            (row["gutenberg_id"], row["reason"], row["detail"])
            for row in result.rejects.to_pylist()
            if row["reason"] in BOOK_REJECTS
        ),
    )
    # A run that fetched has changed the cache: key it again, now that every ingested book
    # (and RDF record) is in it.
    if key is None or result.fetched:
        key = ingest_key(ids, paths.raw, catalog=metadata)
    if key is not None:
        write_record(record_file, key, summary.to_dict())
    return summary
