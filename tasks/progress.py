"""Progress of long work, shown twice: a tqdm bar on the terminal (only when there is one) and
a Prefect progress artifact on the run's page in the UI."""

import base64
import re
from pathlib import Path
from types import TracebackType
from uuid import UUID

from prefect import get_client
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId
from prefect.runtime import flow_run
from tqdm.auto import tqdm


class StageProgress:
    # Each artifact update is an API call: report in steps of this many percent.
    ARTIFACT_STEP_PERCENT = 5.0

    def __init__(self, description: str, total: int | None = None, unit: str = "it"):
        """`total` may be left out until the work knows it (see `set_total`)."""
        self.total = total or 0
        self.done = 0
        self._bar = tqdm(total=total, desc=description, unit=unit, disable=None, leave=True)
        self._artifact = create_progress_artifact(0.0, description=description)
        self._reported = 0.0

    def set_total(self, total: int) -> None:
        if total != self.total:
            self.total = total
            self._bar.total = total
            self._bar.refresh()

    def update(self, n: int = 1, **postfix: object) -> None:
        self.done += n
        self._bar.update(n)
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        percent = min(100.0, 100.0 * self.done / max(1, self.total))
        if percent - self._reported >= self.ARTIFACT_STEP_PERCENT:
            self._reported = percent
            update_progress_artifact(self._artifact, percent)

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._reported < 100.0:
            update_progress_artifact(self._artifact, 100.0)
        self._bar.close()


def show_on_parent_run(artifact_id: UUID) -> None:
    """Copy an artifact of this run onto the flow run that started it, if any (the pipeline
    for its `train` subflow): a run's Artifacts tab lists only its own, so a user reading the
    pipeline's run would otherwise find its family report in a subflow. The copy has the same
    key and is made last, so it is also the latest of that key."""
    parent = flow_run.parent_flow_run_id
    if not parent:
        return
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id]))
        )
        client.create_artifact(
            ArtifactCreate(
                key=artifact.key,
                type=artifact.type,
                description=artifact.description,
                data=artifact.data,
                flow_run_id=UUID(parent),
            )
        )


def inline_images(markdown: str, folder: Path) -> str:
    """`markdown` with every PNG it links in `folder` embedded as a data: URI: an artifact
    is read in the UI, far from the disk of the worker that wrote the report."""

    def inline(match: re.Match[str]) -> str:
        alt, name = match.group(1), match.group(2)
        png = Path(folder) / name
        if not png.is_file():
            return f"*({alt}: not drawn)*"
        data = base64.b64encode(png.read_bytes()).decode()
        return f"![{alt}](data:image/png;base64,{data})"

    return re.sub(r"!\[([^\]]*)\]\(([\w.-]+\.png)\)", inline, markdown)


def publish_markdown(markdown_file: Path, *, key: str, description: str) -> UUID:
    """A markdown file as an artifact, the PNGs it links beside it inlined (the UI has no
    file server)."""
    text = inline_images(Path(markdown_file).read_text(), Path(markdown_file).parent)
    return create_markdown_artifact(text, key=key, description=description)


def publish_image(png: Path, *, key: str, title: str, extra_markdown: str = "") -> None:
    """A markdown artifact that shows a PNG inline (embedded, so it needs no file server)."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    create_markdown_artifact(
        f"## {title}\n\n![{title}](data:image/png;base64,{data})\n\n{extra_markdown}",
        key=key,
        description=title,
    )
