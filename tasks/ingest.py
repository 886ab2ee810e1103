"""Ingest: fetch books (through the raw cache), split them into poems, write the poems and the
rejects as Parquet (emoverse.corpus.ingest); progress and rejected books shown here."""

from pathlib import Path

from prefect import get_run_logger, task

from emoverse.corpus import ingest
from emoverse.paths import RunPaths
from tasks.progress import StageProgress


@task(name="ingest-books")
def ingest_books_task(
    mirror: str,
    ids: list[int],
    data_dir: str,
    catalog_csv: str | None = None,
    max_parallel: int = 2,
) -> dict:
    """Returns the poems and rejects files and their counts. Downloads are cached under
    `<data_dir>/raw/`, so a second run fetches only what the first one could not; when every
    book is cached and unchanged since the poems were written, nothing is parsed again."""
    logger = get_run_logger()
    with StageProgress("fetching and splitting books", total=len(ids), unit="book") as progress:
        summary = ingest(
            mirror,
            ids,
            RunPaths.at(data_dir),
            catalog_csv=Path(catalog_csv) if catalog_csv else None,
            max_parallel=max_parallel,
            on_book=lambda _id, n: progress.update(1, poems=n),
        )
    if summary.reused:
        logger.info("books unchanged since the last ingest: kept %s", summary.path)
    for gutenberg_id, reason, detail in summary.left_out:
        logger.warning("book %s left out: %s (%s)", gutenberg_id, reason, detail)
    return summary.to_dict()
