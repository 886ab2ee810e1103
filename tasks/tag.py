"""Tag: NRC emotion counts per poem, nine versioned label partitions, the label distribution."""

import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from emoverse.emotions import EMOTIONS, LABELS
from emoverse.errors import MissingStageOutputError
from emoverse.paths import RunPaths
from emoverse.report import plot_label_distribution
from emoverse.tagging import SPLITS, read_partition, tag_poems
from tasks.progress import StageProgress, publish_image


@task(name="tag-poems")
def tag_poems_task(
    data_dir: str,
    min_hits: int = 1,
    min_margin: int = 1,
    lemmatize: bool = False,
    negation: bool = False,
    workers: int | None = None,
    training_follows: bool = False,
) -> dict[str, int]:
    """Returns the number of poems per label. A run whose input and options match the current
    partitions keeps them (and still publishes their distribution). New partitions are
    announced with an `emoverse.partitions.updated` event; `training_follows` (the pipeline
    trains right after) labels it so that the training trigger leaves it alone."""
    logger = get_run_logger()
    paths = RunPaths.at(data_dir)
    poems_file = paths.poems_file
    if not poems_file.exists():
        raise MissingStageOutputError(f"no poems at {poems_file}; run `emoverse ingest` first")
    total = pq.ParquetFile(poems_file).metadata.num_rows
    with StageProgress("tagging poems", total=total, unit="poem") as progress:
        result = tag_poems(
            poems_file,
            paths.partitions,
            min_hits=min_hits,
            min_margin=min_margin,
            lemmatize=lemmatize,
            negation=negation,
            workers=workers,
            on_progress=progress.update,
        )
    manifest = result.manifest
    if result.skipped:
        logger.info(
            "poems and options unchanged: kept partitions %s (%s tokens)",
            result.version,
            manifest.get("tokens"),
        )
    else:
        seconds = max(manifest.get("tag_seconds", 0.0), 1e-9)
        logger.info(
            "wrote partitions %s: %d poems, %s tokens, %.0f lines/s",
            result.version,
            manifest["rows"],
            manifest["tokens"],
            manifest["lines"] / seconds,
        )
        changes = manifest.get("label_changes")
        if changes:
            logger.info(
                "labels changed against %s: %d of %d poems",
                changes["against"],
                changes["changed"],
                changes["compared"],
            )
        emit_event(
            event="emoverse.partitions.updated",
            resource={
                "prefect.resource.id": f"emoverse.partitions.{paths.partitions.resolve()}",
                "emoverse.training-follows": str(training_follows).lower(),
            },
            payload={"data_dir": data_dir, "version": result.version, "counts": result.counts},
        )

    counts = result.counts
    total_tagged = max(1, sum(counts.values()))
    create_table_artifact(
        [
            {
                "label": e,
                "poems": counts[e],
                "share": f"{counts[e] / total_tagged:.1%}",
                **{s: manifest["splits"][e][s] for s in SPLITS},
            }
            for e in LABELS
        ],
        key="label-distribution",
        description=f"Poems per emotion partition (partitions {result.version})",
    )
    create_table_artifact(
        _partition_samples(paths.partitions),
        key="partition-samples",
        description="The first poems of each partition, with their emotion hits",
    )
    with tempfile.TemporaryDirectory() as tmp:
        chart = plot_label_distribution(counts, Path(tmp) / "labels.png")
        publish_image(chart, key="label-distribution-chart", title="Label distribution")
    return counts


def _partition_samples(partitions_dir: Path, per_label: int = 3) -> list[dict]:
    """A few poems per label, first line and counts: what a label looks like in practice."""
    rows = []
    for label in LABELS:
        table = read_partition(partitions_dir, label).slice(0, per_label)
        for poem in table.to_pylist():
            first_line = next((ln for ln in poem["text"].splitlines() if ln.strip()), "")
            rows.append(
                {
                    "label": label,
                    "book": poem["gutenberg_id"],
                    "author": poem.get("author") or "",
                    "first line": first_line[:80],
                    **{e: poem[e] for e in EMOTIONS},
                }
            )
    return rows
