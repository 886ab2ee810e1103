"""Ingest: fetch books, strip Gutenberg's header and footer, split into poems, write Parquet."""

from pathlib import Path

from prefect import task

from emoverse.gutenberg import ingest_books, write_poems
from emoverse.settings import RunPaths
from tasks.progress import StageProgress


@task(name="ingest-books")
def ingest_books_task(mirror: str, ids: list[int], data_dir: str) -> dict:
    """Returns the poems file and its counts."""
    with StageProgress("fetching and splitting books", total=len(ids), unit="book") as progress:
        table = ingest_books(mirror, ids, on_book=lambda _id, n: progress.update(1, poems=n))
    path = write_poems(table, RunPaths(Path(data_dir)).poems)
    return {"path": str(path), "books": len(ids), "poems": table.num_rows}
