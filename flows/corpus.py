"""The corpus stages: fetch and split books (`ingest`), tag them into the nine partitions
(`tag`), and both in one flow for a schedule (`refresh-corpus`)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from emoverse import settings as env
from emoverse.corpus import poetry_ids_from_catalog
from emoverse.paths import RunPaths
from tasks.ingest import ingest_books_task
from tasks.tag import tag_poems_task


def books_run_name(stage: str) -> Callable[[], str]:
    """Names a run for its stage and books (`ingest-4 books`) rather than Prefect's random
    words; read from the run's parameters when it starts."""

    def name() -> str:
        ids, catalog = flow_run.parameters.get("ids"), flow_run.parameters.get("catalog")
        if ids:
            return f"{stage}-{len(ids)} books"
        return f"{stage}-catalog books" if catalog else f"{stage}-{len(env.curated_ids())} books"

    return name


@flow(name="ingest", flow_run_name=books_run_name("ingest"))
def ingest(
    data_dir: str | None = None,
    mirror: str | None = None,
    ids: list[int] | None = None,
    catalog: str | None = None,
    max_parallel: int = 2,
) -> dict[str, Any]:
    """Fetch Gutenberg books and write `<data_dir>/poems/` (poems and rejects).

    Args:
        data_dir: The run's data folder (relative paths are from the working directory);
            default `$EMOVERSE_DATA_DIR`, else data/run.
        mirror: A Gutenberg mirror URL or local folder; default `$EMOVERSE_GUTENBERG_MIRROR`
            (set on the work pool), else the public site.
        ids: Gutenberg book ids; default the poetry books of `catalog`, else the curated list.
        catalog: A Gutenberg catalog CSV (pg_catalog.csv); also supplies titles and authors.
        max_parallel: Downloads at a time.
    """
    data_dir = str(RunPaths.at(data_dir).data_dir)
    if not ids:
        ids = poetry_ids_from_catalog(Path(catalog)) if catalog else env.curated_ids()
    return ingest_books_task(
        mirror or env.mirror(), ids, data_dir, catalog_csv=catalog, max_parallel=max_parallel
    )


@flow(name="tag", flow_run_name="tag")
def tag(
    data_dir: str | None = None,
    min_hits: int = 1,
    min_margin: int = 1,
    lemmatize: bool = False,
    negation: bool = False,
    workers: int | None = None,
    training_follows: bool = False,
) -> dict[str, int]:
    """Tag every poem into the nine partitions `<data_dir>/partitions/data/emotion=<e>/`, as a new
    version (skipped when the poems and options are unchanged).

    Args:
        data_dir: The run's data folder; default `$EMOVERSE_DATA_DIR`, else data/run.
        min_hits: The top emotion needs at least this many lexicon hits, else neutral.
        min_margin: The top emotion must beat the runner-up by this many hits, else neutral.
        lemmatize: Look words up by their noun lemma ("tears" as "tear").
        negation: A hit up to three words after a negator on its line ("not happy") does
            not count.
        workers: Processes for corpora of a million lines or more (default: one per CPU).
        training_follows: Set by `pipeline`, which trains right after: the
            `emoverse.partitions.updated` event then starts no `train` deployment.
    """
    return tag_poems_task(
        str(RunPaths.at(data_dir).data_dir),
        min_hits=min_hits,
        min_margin=min_margin,
        lemmatize=lemmatize,
        negation=negation,
        workers=workers,
        training_follows=training_follows,
    )


@flow(name="refresh-corpus", flow_run_name=books_run_name("refresh-corpus"))
def refresh_corpus(
    data_dir: str | None = None,
    mirror: str | None = None,
    ids: list[int] | None = None,
    catalog: str | None = None,
) -> dict[str, Any]:
    """Ingest and tag. New partitions emit `emoverse.partitions.updated`, which starts the
    `train` deployment (see prefect.yaml).

    Args:
        data_dir: The run's data folder; default `$EMOVERSE_DATA_DIR`, else data/run.
        mirror: A Gutenberg mirror URL or local folder; default `$EMOVERSE_GUTENBERG_MIRROR`
            (set on the work pool), else the public site.
        ids: Gutenberg book ids; default the poetry books of `catalog`, else the curated list.
        catalog: A Gutenberg catalog CSV (pg_catalog.csv).
    """
    data_dir = str(RunPaths.at(data_dir).data_dir)
    ingested = ingest(data_dir, mirror, ids, catalog)
    return {"ingest": ingested, "partitions": tag(data_dir)}
