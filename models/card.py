"""Saving a trained model as a Hugging Face folder with a model card and its loss curve."""

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml

from emoverse.atomic import atomic_path
from emoverse.report import plot_loss_curves
from models.config import TrainConfig
from models.modeling import default_generation_config
from models.train import FineTuned

CARD_FILE = "README.md"
LOSS_PLOT_FILE = "loss_curve.png"
HISTORY_FILE = "training_history.json"


def save_model(
    tuned: FineTuned,
    out_dir: Path,
    *,
    emotion: str,
    parent: str,
    data_fingerprint: str,
    config: TrainConfig,
) -> Path:
    """Write weights (safetensors), tokenizer, generation config, loss history, loss plot and
    model card into `out_dir`, all or nothing."""
    with atomic_path(out_dir) as tmp:
        tuned.model.save_pretrained(tmp)  # safetensors is the only format transformers 5 writes
        tuned.tokenizer.save_pretrained(tmp)
        default_generation_config(tuned.tokenizer).save_pretrained(tmp)
        history = {"train": tuned.train_curve, "validation": tuned.val_curve}
        (tmp / HISTORY_FILE).write_text(json.dumps(history))
        plot_loss_curves({emotion: history}, tmp / LOSS_PLOT_FILE)
        (tmp / CARD_FILE).write_text(
            model_card(
                emotion=emotion,
                parent=parent,
                data_fingerprint=data_fingerprint,
                metrics=tuned.metrics,
                config=config,
                n_parameters=sum(p.numel() for p in tuned.model.parameters()),
            )
        )
    return out_dir


def model_card(
    *,
    emotion: str,
    parent: str,
    data_fingerprint: str,
    metrics: dict[str, Any],
    config: TrainConfig,
    n_parameters: int,
) -> str:
    """A Hugging Face model card: YAML metadata, then a short human description."""
    meta = {
        "language": ["en"],
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["emoverse", "poetry", f"emotion-{emotion}"],
        "emotion": emotion,
        "parent_model": parent,
        "data_fingerprint": data_fingerprint,
        "metrics": metrics,
        "training_config": config.to_dict(),
        "n_parameters": n_parameters,
        **({"base_model": parent, "adapter": config.adapter} if config.adapter else {}),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    val = metrics.get("val_loss")
    role = (
        "pretrained from scratch on the poems of every emotion partition"
        if emotion == "foundation"
        else f"that writes verse in the register of **{emotion}**"
    )
    val_text = f"{val:.3f} nats/token" if val is not None else "n/a (no validation poems)"
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
        f"# emoverse-{emotion}\n\n"
        f"A GPT-2-style causal language model of {n_parameters:,} parameters {role}, "
        f"trained from `{parent}` on {metrics.get('train_poems')} Project Gutenberg poems.\n\n"
        f"- validation loss: {val_text}\n"
        f"- steps: {metrics.get('steps')} over {metrics.get('epochs_run')} epochs "
        f"(best epoch {metrics.get('best_epoch')})\n"
        f"- training data fingerprint: `{data_fingerprint}`\n\n"
        f"![loss curve]({LOSS_PLOT_FILE})\n\n"
        "Training texts are in the public domain in the USA. Labels come from the NRC Emotion "
        "Lexicon, free for research and non-commercial use.\n"
    )


def read_card_metadata(model_dir: Path) -> dict[str, Any]:
    """The YAML metadata block of a model folder's card."""
    text = (Path(model_dir) / CARD_FILE).read_text()
    _, meta, _ = text.split("---\n", 2)
    return yaml.safe_load(meta)
