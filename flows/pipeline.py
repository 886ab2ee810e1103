"""The emoverse DAG: ingest -> tag -> train base -> fan out eight children -> register.

Each stage is a flow of its own (the CLI's `ingest`, `tag` and `train` run them alone), and
`pipeline` runs them in order as subflows.
"""

import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from emoverse.emotions import EMOTIONS, NEUTRAL
from emoverse.errors import EmoverseError
from emoverse.gutenberg import poetry_ids_from_catalog
from emoverse.settings import DEFAULT_BASE_MODEL, curated_ids, default_mirror
from models.config import BASE_TRAIN, CHILD_TRAIN, FOUNDATION_TRAIN
from tasks.ingest import ingest_books_task
from tasks.tag import tag_poems_task
from tasks.train import (
    prepare_init_task,
    publish_summary_task,
    register_model_task,
    train_model_task,
)

# Relative to the working directory: the checkout, for deployments (see prefect.yaml).
DEFAULT_DATA_DIR = "data/run"

# Children trained at once in this process. One by default: on a CPU they share the same
# cores, and on one GPU they share its memory; more GPU hosts mean more workers, not threads.
PARALLEL_TRAININGS = int(os.environ.get("EMOVERSE_PARALLEL_TRAININGS", "1"))


@flow(name="ingest")
def ingest(
    data_dir: str = DEFAULT_DATA_DIR,
    mirror: str | None = None,
    ids: list[int] | None = None,
    catalog: str | None = None,
    max_parallel: int = 2,
) -> dict[str, Any]:
    """Fetch Gutenberg books and write `<data_dir>/poems/` (poems and rejects). Without
    `mirror`, the public site (or `$EMOVERSE_GUTENBERG_MIRROR`); without `ids`, the poetry
    books of the `catalog` CSV if given, else the curated list in `data/`. The catalog also
    supplies titles and authors."""
    if not ids:
        ids = poetry_ids_from_catalog(Path(catalog)) if catalog else curated_ids()
    return ingest_books_task(
        mirror or default_mirror(), ids, data_dir, catalog_csv=catalog, max_parallel=max_parallel
    )


@flow(name="tag")
def tag(
    data_dir: str = DEFAULT_DATA_DIR,
    min_hits: int = 1,
    min_margin: int = 1,
    lemmatize: bool = False,
    workers: int | None = None,
) -> dict[str, int]:
    """Tag every poem and write the nine partitions `<data_dir>/partitions/emotion=<e>/` as a
    new version (skipped when the poems and options are unchanged). The label is the emotion
    with at least `min_hits` hits that beats every other by at least `min_margin`, else
    neutral; `lemmatize` looks words up by WordNet noun lemma (needs NLTK's wordnet data)."""
    return tag_poems_task(
        data_dir, min_hits=min_hits, min_margin=min_margin, lemmatize=lemmatize, workers=workers
    )


@flow(name="train", task_runner=ThreadPoolTaskRunner(max_workers=PARALLEL_TRAININGS))
def train(
    data_dir: str = DEFAULT_DATA_DIR,
    base_model: str = DEFAULT_BASE_MODEL,
    min_poems: int = 1,
    foundation_epochs: int | None = None,
    base_epochs: int | None = None,
    child_epochs: int | None = None,
    max_steps: int | None = None,
    overrides: dict[str, Any] | None = None,
    adapter: str | None = None,
) -> dict[str, Any]:
    """Pretrain a foundation (scratch presets only), fine-tune the neutral base from it (or
    from a pretrained `base_model`), then one child per emotion from the base, registering
    each as its emotion's champion. A partition under `min_poems` training poems is skipped
    with the reason; a child that fails does not stop the others. `overrides` sets any
    `TrainConfig` field (e.g. `{"batch_size": 32, "compile": true}`) for every stage;
    `adapter="lora"` trains the children as LoRA adapters on the base."""
    logger = get_run_logger()
    common = {**(overrides or {}), **({"max_steps": max_steps} if max_steps else {})}
    foundation_config = FOUNDATION_TRAIN.with_overrides(**common, epochs=foundation_epochs)
    base_config = BASE_TRAIN.with_overrides(**common, epochs=base_epochs)
    child_config = CHILD_TRAIN.with_overrides(**common, epochs=child_epochs, adapter=adapter)

    init = prepare_init_task(base_model, data_dir, foundation_config.to_dict())
    base = train_model_task(
        NEUTRAL, init, data_dir, base_config.to_dict(), parent=base_model, min_poems=min_poems
    )
    if "reason" in base:
        raise EmoverseError(f"cannot train the neutral base model: {base['reason']}")
    registered = [register_model_task(base, data_dir)]
    parent = f"emoverse-{NEUTRAL} v{registered[0]['version']}"

    children = train_model_task.map(
        list(EMOTIONS),
        init=unmapped(base["path"]),
        data_dir=unmapped(data_dir),
        config=unmapped(child_config.to_dict()),
        parent=unmapped(parent),
        min_poems=unmapped(min_poems),
    )
    skipped: list[dict[str, Any]] = []
    failed: list[str] = []
    for emotion, future in zip(EMOTIONS, children, strict=True):
        try:
            child = future.result()
        except Exception as exc:  # one child's failure must not lose the others' models
            logger.error("training %s failed: %s", emotion, exc)
            failed.append(emotion)
            continue
        if "reason" in child:
            logger.warning("skipped %s: %s", emotion, child["reason"])
            skipped.append(child)
        else:
            registered.append(register_model_task(child, data_dir))

    publish_summary_task(registered, skipped)
    if failed:
        raise RuntimeError(f"training failed for: {', '.join(failed)}")
    return {
        "registered": {r["emotion"]: r["version"] for r in registered},
        "skipped": {s["emotion"]: s["reason"] for s in skipped},
    }


@flow(name="pipeline")
def pipeline(
    data_dir: str = DEFAULT_DATA_DIR,
    mirror: str | None = None,
    ids: list[int] | None = None,
    catalog: str | None = None,
    max_parallel: int = 2,
    base_model: str = DEFAULT_BASE_MODEL,
    min_poems: int = 1,
    foundation_epochs: int | None = None,
    base_epochs: int | None = None,
    child_epochs: int | None = None,
    max_steps: int | None = None,
    overrides: dict[str, Any] | None = None,
    adapter: str | None = None,
) -> dict[str, Any]:
    """The whole DAG on one data dir."""
    ingested = ingest(data_dir, mirror, ids, catalog, max_parallel)
    counts = tag(data_dir)
    trained = train(
        data_dir,
        base_model,
        min_poems,
        foundation_epochs,
        base_epochs,
        child_epochs,
        max_steps,
        overrides,
        adapter,
    )
    return {"ingest": ingested, "partitions": counts, **trained}
