"""The training stages as plain functions over paths: what a Prefect task, a test or a
notebook calls. Each returns a small record, never a model object."""

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist

from emoverse.done import reuse_or_build, stage_key
from emoverse.emotions import FOUNDATION, NEUTRAL, check_label
from emoverse.paths import RunPaths
from models.config import BASE_TRAIN, CHILD_TRAIN, FOUNDATION_TRAIN, TrainConfig, is_scratch
from models.device import is_main_process
from models.folders.card import read_card_metadata, save_model, training_metrics
from models.folders.model_folder import (
    DamagedModelError,
    build_scratch_model,
    verify_weights,
    weight_files,
)
from models.records import SkippedModel, TrainedModel
from models.training.data import fingerprint, load_partition, load_poems
from models.training.loop import StepCallback, fine_tune

log = logging.getLogger(__name__)


def prepare_foundation(
    base_model: str,
    poems_file: Path,
    models_dir: Path,
    config: TrainConfig = FOUNDATION_TRAIN,
    *,
    cache_dir: Path | None = None,
    on_step: StepCallback | None = None,
) -> str:
    """What the neutral base starts from. A hub id or folder is used as it is. A `scratch:`
    preset has had no pretraining, so it gets a foundation: a tokenizer trained on the train
    split of every ingested poem, random weights, then `config`'s training on those poems.
    Same poems and settings, same folder: a rerun reuses it. It reads the poems, not the
    partitions, so re-tagging (poems moving between labels) keeps the foundation."""
    if not is_scratch(base_model):
        return base_model
    train, val = (load_poems(poems_file, split, cache_dir) for split in ("train", "validation"))
    corpus_fp = fingerprint(train)
    name = base_model.replace(":", "-")
    random_init = Path(models_dir) / "init" / f"{name}-{corpus_fp[:12]}"
    reuse_or_build(
        random_init,
        lambda folder: build_scratch_model(base_model, train["text"], folder, seed=config.seed),
        done=_saved,
    )
    run_key = _run_key(random_init, corpus_fp, config)
    out = Path(models_dir) / "foundation" / f"{name}-{run_key}"
    reuse_or_build(
        out,
        lambda folder: _train_into(
            folder,
            run_key,
            random_init,
            list(train["text"]),
            list(val["text"]),
            config,
            on_step=on_step,
            emotion=FOUNDATION,
            parent=base_model,
            data_fingerprint=corpus_fp,
        ),
        done=_saved,
    )
    return str(out)


def _saved(model_dir: Path) -> bool:
    """ "Already done?" for a model folder: it is named by its run key and renamed into place
    only when whole, so one that has its config is a finished run of exactly this, unless
    its weights were damaged since (they no longer match the card's record): then the folder
    is removed and trained again."""
    if not (model_dir / "config.json").exists():
        return False
    try:
        verify_weights(model_dir)
        if not weight_files(model_dir):
            raise DamagedModelError(f"{model_dir} holds no weights")
    except DamagedModelError as exc:
        log.warning("re-training %s: %s", model_dir.name, exc)
        shutil.rmtree(model_dir)
        return False
    return True


def _train_into(
    out: Path,
    run_key: str,
    init: str | Path,
    train: list[str],
    val: list[str],
    config: TrainConfig,
    *,
    on_step: StepCallback | None,
    emotion: str,
    parent: str,
    data_fingerprint: str,
    controls: tuple[list[str], list[str]] | None = None,
    parent_version: int | None = None,
) -> dict[str, Any]:
    """Fine-tune `init` on the `train` poems and save it as the model folder `out`; its
    metrics. Checkpoints go beside `out` under the run key, so a rerun after a crash resumes,
    and are removed once the folder is whole. Under data parallelism only rank 0 saves (the
    others hold the same weights). `controls`: each train and validation poem's control
    token (the conditional model)."""
    checkpoint_dir = out.parent / f".checkpoint-{run_key}"
    tuned = fine_tune(
        init,
        train,
        val,
        config,
        on_step=on_step,
        checkpoint_dir=checkpoint_dir,
        controls=controls,
    )
    if is_main_process():
        save_model(
            tuned,
            out,
            emotion=emotion,
            parent=parent,
            parent_version=parent_version,
            data_fingerprint=data_fingerprint,
            config=config,
        )
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return tuned.metrics


def _run_key(init: str | Path, data_fp: str, config: TrainConfig) -> str:
    """Names one training run: same start, data and settings give the same key, so a rerun
    after a crash finds its checkpoint (and a finished run its output)."""
    # A local start is named by its folder (itself a run key), not its path: the same data dir
    # reached by a relative path in one process and an absolute one in another (a deployment's
    # worker) must give the same key.
    start = f"dir:{Path(init).name}" if Path(init).is_dir() else f"hub:{init}"
    return stage_key([start, data_fp, config.to_dict()], 12)


def train_emotion_model(
    emotion: str,
    init: str,
    *,
    partitions_dir: Path,
    models_dir: Path,
    config: TrainConfig,
    parent: str,
    parent_version: int | None = None,
    min_poems: int = 1,
    cache_dir: Path | None = None,
    on_step: StepCallback | None = None,
) -> TrainedModel | SkippedModel:
    """Fine-tune `init` on the emotion's train split, validate on its validation split, and
    save a model folder under `models_dir/<emotion>/`; `parent_version`: the registry version
    `parent` names (a child's neutral base). A partition with fewer than
    `min_poems` training poems is skipped, with the reason.

    The folder is named by the run key (start, data fingerprint, settings): when it already
    exists, an earlier run trained exactly this model and it is returned as it is (`cached`),
    so a rerun with nothing changed trains nothing, and a retry trains only what failed."""
    check_label(emotion)
    train = load_partition(partitions_dir, emotion, "train", cache_dir)
    if len(train) < max(1, min_poems):
        return SkippedModel(
            emotion, f"{len(train)} training poems, fewer than min_poems = {max(1, min_poems)}"
        )
    data_fp = fingerprint(train)
    run_key = _run_key(init, data_fp, config)
    out = Path(models_dir) / emotion / f"run-{run_key}"
    if _saved(out):
        meta = read_card_metadata(out)
        metrics = training_metrics(meta)
        return TrainedModel(emotion, str(out), parent, data_fp, metrics, True, parent_version)
    val = load_partition(partitions_dir, emotion, "validation", cache_dir)
    metrics = _train_into(
        out,
        run_key,
        init,
        list(train["text"]),
        list(val["text"]),
        config,
        on_step=on_step,
        emotion=emotion,
        parent=parent,
        parent_version=parent_version,
        data_fingerprint=data_fp,
    )
    path = str(out) if is_main_process() else ""  # only rank 0 wrote the folder
    return TrainedModel(emotion, path, parent, data_fp, metrics, parent_version=parent_version)


def main(argv: list[str] | None = None) -> None:
    """One training stage from the command line, for launchers that start one process per
    device:

        torchrun --standalone --nproc_per_node 8 -m models.training.stages --emotion joy \\
            --init data/run/models/neutral/<version> --data-dir data/run
        accelerate launch --num_processes 8 -m models.training.stages ...   # the same

    Prints the trained model's record (JSON) from rank 0; register it with
    `ModelRegistry.register` or let the Prefect flow do it.
    """
    parser = argparse.ArgumentParser(
        prog="python -m models.training.stages", description=main.__doc__
    )
    parser.add_argument("--emotion", required=True)
    parser.add_argument("--init", required=True, help="folder or hub id to start from")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--parent", default=None, help="lineage for the card (default: --init)")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="training settings, e.g. batch_size=32 max_steps=100",
    )
    args = parser.parse_args(argv)
    defaults = BASE_TRAIN if args.emotion == NEUTRAL else CHILD_TRAIN
    config = defaults.with_overrides(**dict(_setting(item) for item in args.set))
    paths = RunPaths(args.data_dir)
    result = train_emotion_model(
        args.emotion,
        args.init,
        partitions_dir=paths.partitions,
        models_dir=paths.models,
        config=config,
        parent=args.parent or args.init,
        cache_dir=paths.hf_cache,
    )
    if is_main_process():
        print(json.dumps(result.to_dict()))
    if dist.is_initialized():
        dist.destroy_process_group()


def _setting(item: str) -> tuple[str, Any]:
    """`batch_size=32` -> ("batch_size", 32); values are JSON (numbers, true/false, null),
    anything else a string (`adapter=lora`)."""
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


if __name__ == "__main__":
    main()
