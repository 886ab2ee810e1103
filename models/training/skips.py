"""Whether an emotion has enough training poems to train a model from: one rule, read from the
partitions' manifest (no torch, no `datasets`), so that a flow decides before it queues a
child for a GPU, and the training stage decides the same from the rows it loaded."""

from pathlib import Path

from emoverse.tagging import read_manifest
from models.records import SkippedModel


def skip_for(emotion: str, train_poems: int, min_poems: int) -> SkippedModel | None:
    """The skip (with its reason) of a model with `train_poems` training poems, or None."""
    needed = max(1, min_poems)
    if train_poems < needed:
        return SkippedModel(
            emotion, f"{train_poems} training poems, fewer than min_poems = {needed}"
        )
    return None


def planned_skip(partitions_dir: Path, emotion: str, min_poems: int) -> SkippedModel | None:
    """The skip of `emotion` as the current partitions' manifest counts its training poems;
    None when it trains, or when there is no manifest (the stage then decides)."""
    manifest = read_manifest(partitions_dir)
    if manifest is None:
        return None
    poems = ((manifest.get("splits") or {}).get(emotion) or {}).get("train")
    return None if poems is None else skip_for(emotion, int(poems), min_poems)
