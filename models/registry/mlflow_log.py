"""A model folder logged the way stock MLflow expects: an MLflow run in experiment `emoverse`
(training settings as params, numeric evaluation results and the loss curves as metrics, the
evaluation, card and loss history as artifacts) that outputs a LoggedModel in MLflow's
transformers flavour (task `text-generation`), which `mlflow.transformers.load_model` and
`mlflow.pyfunc.load_model` load.

Cost: the folder's model is loaded and written once by MLflow (one write of its weights);
where the artifact store is a local folder on the same file system, the written weights are
then replaced by hard links to the folder's own files, so a registered version holds no second
copy on disk (a LoRA child is logged merged: full weights, no link)."""

import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from emoverse.atomic import atomic_path
from models.folders.card import CARD_FILE, HISTORY_FILE, LOSS_PLOT_FILE, read_card_metadata
from models.folders.model_folder import ADAPTER_CONFIG, weight_files
from models.records import EVALUATION_FILE

EXPERIMENT = "emoverse"
TASK = "text-generation"
# Beside the model, in the run: what a reader of the run wants to open.
RUN_ARTIFACTS = (EVALUATION_FILE, CARD_FILE, HISTORY_FILE, LOSS_PLOT_FILE)
# What the logged model needs to load again; pinned to what wrote it. Listed rather than
# inferred: MLflow's inference loads the model in a subprocess (seconds) and asks for
# torchvision, which is not installed.
REQUIREMENTS = ("mlflow-skinny", "transformers", "torch", "tokenizers", "safetensors")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
BATCH = 1000  # MLflow's limit on metrics per log_batch call
NO_CARD = "---\nlibrary_name: transformers\npipeline_tag: text-generation\n---\n"


@dataclass(frozen=True)
class LoggedVersion:
    run_id: str
    model_id: str
    artifact_location: str  # where the MLflow model lives: a model version's source


def numeric_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in a nested metrics dict, keyed by their dotted path
    (`evaluation.judges.nrc.fidelity.low`); strings, lists, booleans and None left out."""
    found: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.update(numeric_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = float(value)
    return found


def card_params(folder: Path) -> dict[str, Any]:
    """The training settings the folder's card recorded, or {} (no card)."""
    try:
        return dict(read_card_metadata(folder).get("training_config") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def saved_history(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The folder's loss curves ({"train": [(step, loss)], "validation": [...]}), or {}."""
    try:
        raw = json.loads((Path(folder) / HISTORY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: [(int(s), float(v)) for s, v in points] for k, points in raw.items() if points}


def is_local(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file")


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)


def log_model_folder(
    client: Any,
    experiment_id: str,
    name: str,
    folder: Path,
    *,
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    history: Mapping[str, Sequence[tuple[int, float]]],
    tags: Mapping[str, str],
) -> LoggedVersion:
    """Log `folder` as a finished run of `experiment_id` and a READY LoggedModel named `name`;
    a failure marks both FAILED and is raised."""
    from mlflow.entities import LoggedModelOutput, Metric, Param

    folder = Path(folder)
    run = client.create_run(experiment_id, run_name=f"{name}-{folder.name}", tags=dict(tags))
    run_id = run.info.run_id
    model = None
    try:
        model = client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, tags=dict(tags), model_type=TASK
        )
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        now = int(time.time() * 1000)
        # The final numbers belong to both the run and its model; the curves to the run.
        entries = [
            Metric(key, value, now, 0, model_id=model.model_id)
            for key, value in numeric_metrics(metrics).items()
        ]
        for curve, points in history.items():
            entries.extend(Metric(f"loss.{curve}", loss, now, step) for step, loss in points)
        param_list = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in sorted(params.items())]
        for start in range(0, max(len(entries), 1), BATCH):
            client.log_batch(
                run_id,
                metrics=entries[start : start + BATCH],
                params=param_list if start == 0 else [],
            )
        for file in RUN_ARTIFACTS:
            if (folder / file).is_file():
                client.log_artifact(run_id, str(folder / file))
        _save_model_artifacts(client, folder, model, run_id)
        client.finalize_logged_model(model.model_id, "READY")
    except BaseException:
        if model is not None:
            client.finalize_logged_model(model.model_id, "FAILED")
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return LoggedVersion(run_id, model.model_id, model.artifact_location)


def _save_model_artifacts(client: Any, folder: Path, model: Any, run_id: str) -> None:
    """Save the MLflow model straight into a local artifact location (renamed into place
    whole, weights linked), or through a temporary folder to a remote one."""
    location = model.artifact_location
    if is_local(location):
        with atomic_path(local_path(location)) as tmp:
            _save_mlflow_model(folder, tmp, run_id=run_id, model_id=model.model_id)
            link_weights(folder, tmp / "model")
        return
    with tempfile.TemporaryDirectory(prefix="emoverse-mlflow-") as tmp:
        out = Path(tmp) / "model"
        _save_mlflow_model(folder, out, run_id=run_id, model_id=model.model_id)
        client.log_model_artifacts(model.model_id, str(out))


def _save_mlflow_model(folder: Path, out: Path, *, run_id: str, model_id: str) -> None:
    import mlflow.transformers
    from huggingface_hub import ModelCard
    from mlflow.models import Model

    from models.folders.model_folder import load_model

    model, tokenizer = load_model(folder)  # a LoRA child comes back merged
    card_file = folder / CARD_FILE
    card = ModelCard(card_file.read_text() if card_file.is_file() else NO_CARD)
    with _quiet("mlflow.transformers", "mlflow.models.model", "mlflow.utils.requirements_utils"):
        mlflow.transformers.save_model(
            {"model": model, "tokenizer": tokenizer},
            path=str(out),
            task=TASK,
            # Given, so that MLflow asks no hub for a card or a licence (none is reachable).
            model_card=card,
            pip_requirements=[_pinned(p) for p in REQUIREMENTS],
            mlflow_model=Model(run_id=run_id, model_id=model_id, model_uuid=model_id),
        )


def link_weights(folder: Path, model_dir: Path) -> int:
    """Replace the weight files MLflow wrote into `model_dir` with hard links to the same
    files of `folder` (same names, same tensors), where the file system allows; the number
    of files linked. A LoRA folder (adapter weights only) links nothing."""
    from safetensors import safe_open

    if (Path(folder) / ADAPTER_CONFIG).exists():
        return 0
    written = {p.name: p for p in weight_files(model_dir)}
    originals = {p.name: p for p in weight_files(folder)}
    if not written or set(written) != set(originals):
        return 0
    for file, original in originals.items():
        with safe_open(str(original), "pt") as a, safe_open(str(written[file]), "pt") as b:
            if set(a.keys()) != set(b.keys()):
                return 0
    linked = 0
    for file, original in originals.items():
        tmp = written[file].with_name(f".{file}.link-{uuid.uuid4().hex[:8]}")
        try:
            os.link(original, tmp)
        except OSError:  # another file system, or one without hard links: keep the copy
            continue
        os.replace(tmp, written[file])
        linked += 1
    return linked


def _pinned(package: str) -> str:
    # A local version label (torch's `+cpu`) is not installable from PyPI.
    return f"{package}=={metadata.version(package).split('+')[0]}"


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """MLflow warns that a local model has no hub card, licence or pinnable extras: true,
    and nothing to act on."""
    saved = [(log, log.level) for log in map(logging.getLogger, loggers)]
    for log, _ in saved:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in saved:
            log.setLevel(level)
