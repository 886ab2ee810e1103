"""The whole emoverse DAG: ingest -> tag -> foundation -> neutral base -> eight children ->
registry. Each stage is a flow of its own (flows/corpus.py, flows/training.py), run here in
order as subflows; prefect.yaml deploys them."""

from typing import Any

from prefect import flow

from emoverse.paths import RunPaths
from flows.corpus import books_run_name, ingest, tag
from flows.training import train_by_mode
from models.config import TrainingSettings, TrainMode


@flow(name="pipeline", flow_run_name=books_run_name("pipeline"))
def pipeline(
    data_dir: str | None = None,
    mirror: str | None = None,
    ids: list[int] | None = None,
    catalog: str | None = None,
    max_parallel: int = 2,
    settings: TrainingSettings = TrainingSettings(),
    mode: TrainMode = "family",
) -> dict[str, Any]:
    """Fetch, tag, train, evaluate and register the whole family on one data folder. Stages
    whose inputs did not change since the last run are reused, not redone.

    Args:
        data_dir: The run's data folder (relative paths are from the working directory);
            default `$EMOVERSE_DATA_DIR`, else data/run.
        mirror: A Gutenberg mirror URL or local folder; default `$EMOVERSE_GUTENBERG_MIRROR`
            (set on the work pool), else the public site.
        ids: Gutenberg book ids; default the poetry books of `catalog`, else the curated list.
        catalog: A Gutenberg catalog CSV (pg_catalog.csv); also supplies titles and authors.
        max_parallel: Downloads at a time.
        settings: Training and evaluation settings.
        mode: What to train: the family (base and eight children), the conditional model
            (one model for every emotion), or both.
    """
    data_dir = str(RunPaths.at(data_dir).data_dir)
    ingested = ingest(data_dir, mirror, ids, catalog, max_parallel)
    counts = tag(data_dir, training_follows=True)
    return {"ingest": ingested, "partitions": counts, **train_by_mode(data_dir, settings, mode)}
