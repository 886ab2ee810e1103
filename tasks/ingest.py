"""Ingest: fetch books (through the raw cache), strip Gutenberg's header and footer, split into
poems, write the poems and the rejects as Parquet."""

from pathlib import Path

from prefect import get_run_logger, task

from emoverse.gutenberg import (
    BOOK_REJECTS,
    DEFAULT_PARALLEL,
    catalog_metadata,
    ingest_books,
    ingest_key,
    read_ingest_record,
    write_ingest_record,
    write_poems,
    write_rejects,
)
from emoverse.settings import RunPaths
from tasks.progress import StageProgress


@task(name="ingest-books")
def ingest_books_task(
    mirror: str,
    ids: list[int],
    data_dir: str,
    catalog_csv: str | None = None,
    max_parallel: int = DEFAULT_PARALLEL,
) -> dict:
    """Returns the poems and rejects files and their counts. Downloads are cached under
    `<data_dir>/raw/`, so a second run fetches only what the first one could not; when every
    book is cached and unchanged since the poems were written, nothing is parsed again."""
    logger = get_run_logger()
    paths = RunPaths(Path(data_dir))
    raw_cache = Path(data_dir) / "raw"
    # The catalog gives cleaner titles and authors than old files' headers.
    metadata = catalog_metadata(Path(catalog_csv)) if catalog_csv else None
    key = ingest_key(ids, raw_cache, catalog=metadata)
    previous = read_ingest_record(paths.poems)
    if (
        key is not None
        and previous
        and previous["key"] == key
        and Path(previous["summary"]["path"]).exists()
    ):
        logger.info("books unchanged since the last ingest: kept %s", previous["summary"]["path"])
        return {**previous["summary"], "fetched": 0, "from_cache": 0, "reused": True}
    with StageProgress("fetching and splitting books", total=len(ids), unit="book") as progress:
        result = ingest_books(
            mirror,
            ids,
            cache_dir=raw_cache,
            catalog=metadata,
            max_parallel=max_parallel,
            on_book=lambda _id, n: progress.update(1, poems=n),
        )
    for row in result.rejects.to_pylist():
        if row["reason"] in BOOK_REJECTS:
            logger.warning(
                "book %s left out: %s (%s)", row["gutenberg_id"], row["reason"], row["detail"]
            )
    path = write_poems(result.poems, paths.poems)
    rejects_path = write_rejects(result.rejects, paths.poems)
    summary = {
        "path": str(path),
        "rejects_path": str(rejects_path),
        "books": result.books,
        "poems": result.poems.num_rows,
        "rejected_books": len(set(ids)) - result.books,
        "rejects": result.rejects.num_rows,
        "fetched": result.fetched,
        "from_cache": result.from_cache,
        "reused": False,
    }
    # A run that fetched has changed the cache: key it again, now that every ingested book
    # (and RDF record) is in it.
    if key is None or result.fetched:
        key = ingest_key(ids, raw_cache, catalog=metadata)
    if key is not None:
        write_ingest_record(paths.poems, {"key": key, "summary": summary})
    return summary
