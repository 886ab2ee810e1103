"""Tag: NRC emotion counts per poem, nine label partitions, the label distribution."""

import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_table_artifact

from emoverse.emotions import LABELS
from emoverse.errors import MissingStageOutputError
from emoverse.report import plot_label_distribution
from emoverse.settings import RunPaths
from emoverse.tagging import tag_table, write_partitions
from tasks.progress import StageProgress, publish_image


@task(name="tag-poems")
def tag_poems_task(data_dir: str) -> dict[str, int]:
    """Returns the number of poems per label."""
    paths = RunPaths(Path(data_dir))
    poems_file = paths.poems / "poems.parquet"
    if not poems_file.exists():
        raise MissingStageOutputError(f"no poems at {poems_file}; run `emoverse ingest` first")
    poems = pq.read_table(poems_file)
    with StageProgress("tagging poems", total=poems.num_rows, unit="poem") as progress:
        tagged = tag_table(poems, on_progress=progress.update)
    counts = write_partitions(tagged, paths.partitions)

    total = max(1, sum(counts.values()))
    create_table_artifact(
        [{"label": e, "poems": counts[e], "share": f"{counts[e] / total:.1%}"} for e in LABELS],
        key="label-distribution",
        description="Poems per emotion partition",
    )
    with tempfile.TemporaryDirectory() as tmp:
        chart = plot_label_distribution(counts, Path(tmp) / "labels.png")
        publish_image(chart, key="label-distribution-chart", title="Label distribution")
    return counts
