"""Saving a trained model as a Hugging Face folder with a model card and its loss curve."""

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from emoverse.atomic import atomic_path
from emoverse.emotions import FOUNDATION, model_name
from emoverse.report import plot_loss_curves
from emoverse.tagging.card import DATASET_ID, LEXICON_LINK, LICENSE_NAME
from models.config import TrainConfig
from models.evaluation.promotion import gate_reasons
from models.records import lineage_version

CARD_FILE = "README.md"
LOSS_PLOT_FILE = "loss_curve.png"
HISTORY_FILE = "training_history.json"
SCRATCH_PREFIX = "scratch:"  # models.config's presets trained from scratch
# Training figures: the Hub's own `metrics` field is a list of metric names.
TRAINING_METRICS = "training_metrics"

if TYPE_CHECKING:  # torch and transformers load only when a model is saved
    from models.training.loop import FineTuned


def save_model(
    tuned: "FineTuned",
    out_dir: Path,
    *,
    emotion: str,
    parent: str,
    data_fingerprint: str,
    config: TrainConfig,
    parent_version: int | None = None,
) -> Path:
    """Write a trained model's folder (`write_model_folder`) with its loss history, loss plot
    and model card, all or nothing."""
    # transformers loads only when a model is saved: the registry and flows read cards.
    from models.folders.model_folder import weight_digests, write_model_folder

    def card_and_history(tmp: Path) -> None:
        weights = weight_digests(tmp)  # the card vouches for these exact files
        history = {"train": tuned.train_curve, "validation": tuned.val_curve}
        (tmp / HISTORY_FILE).write_text(json.dumps(history))
        plot_loss_curves({emotion: history}, tmp / LOSS_PLOT_FILE)
        (tmp / CARD_FILE).write_text(
            model_card(
                emotion=emotion,
                parent=parent,
                parent_version=parent_version,
                data_fingerprint=data_fingerprint,
                metrics=tuned.metrics,
                config=config,
                n_parameters=sum(p.numel() for p in tuned.model.parameters()),
                weights=weights,
            )
        )

    return write_model_folder(tuned.model, tuned.tokenizer, out_dir, extras=card_and_history)


def model_card(
    *,
    emotion: str,
    parent: str,
    data_fingerprint: str,
    metrics: dict[str, Any],
    config: TrainConfig,
    n_parameters: int,
    weights: dict[str, Any] | None = None,
    parent_version: int | None = None,
) -> str:
    """A Hugging Face model card: YAML metadata (the Hub's fields, then our own: the exact
    lineage, data, settings and weights), then a short human description."""
    base_model = hub_base_model(emotion, parent, parent_version)
    meta = {
        **({"base_model": base_model} if base_model else {}),
        "datasets": [DATASET_ID],
        "language": ["en"],
        # Trained on the NRC lexicon's labels: its research and non-commercial terms hold.
        "license": "other",
        "license_name": LICENSE_NAME,
        "license_link": LEXICON_LINK,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["emoverse", "poetry", "gpt2", f"emotion-{emotion}"],
        "metrics": ["perplexity"],
        "emotion": emotion,
        "parent_model": parent,
        **({"parent_version": parent_version} if parent_version is not None else {}),
        "data_fingerprint": data_fingerprint,
        TRAINING_METRICS: metrics,
        "training_config": config.to_dict(),
        "n_parameters": n_parameters,
        **({"adapter": config.adapter} if config.adapter else {}),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **({"weights": weights} if weights else {}),
    }
    val = metrics.get("val_loss")
    role = (
        "pretrained from scratch on the poems of every emotion partition"
        if emotion == FOUNDATION
        else f"that writes verse in the register of **{emotion}**"
    )
    val_text = f"{val:.3f} nats/token" if val is not None else "n/a (no validation poems)"
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
        f"# {model_name(emotion)}\n\n"
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


def hub_base_model(emotion: str, parent: str, parent_version: int | None = None) -> str | None:
    """The Hub's `base_model` for a model trained from `parent` (its lineage as recorded):
    none for a foundation (trained from scratch); the foundation for a neutral base on a
    scratch preset; the registered name for a family member ("emoverse-neutral v3" is
    `emoverse-neutral`, its version kept in `parent_model` and `parent_version`); else the Hub
    id or folder."""
    if emotion == FOUNDATION:
        return None
    if parent.startswith(SCRATCH_PREFIX):
        return model_name(FOUNDATION)
    if parent_version is not None:
        return parent.removesuffix(f" v{parent_version}")
    lineage = lineage_version(parent)  # a caller that did not say the version
    return lineage[0] if lineage else parent


def training_metrics(meta: dict[str, Any]) -> dict[str, Any]:
    """A card's training figures (steps, losses, poems), from cards of either age: before
    the Hub's fields they were under `metrics`."""
    found = meta.get(TRAINING_METRICS)
    if found is None and isinstance(meta.get("metrics"), dict):
        found = meta["metrics"]
    return found or {}


def read_card_metadata(model_dir: Path) -> dict[str, Any]:
    """The YAML metadata block of a model folder's card."""
    text = (Path(model_dir) / CARD_FILE).read_text()
    _, meta, _ = text.split("---\n", 2)
    return yaml.safe_load(meta)


# The evaluation section sits between these markers, so a rerun replaces it.
EVALUATION_START = "<!-- emoverse:evaluation -->"
EVALUATION_END = "<!-- /emoverse:evaluation -->"


def add_evaluation_to_card(
    model_dir: Path, evaluation: dict[str, Any], promotion: str, *, promoted: bool | None = None
) -> None:
    """Add an evaluation (`models.evaluation.evaluate.Evaluation.to_dict()`) and
    the promotion gate's
    decision to the folder's card: `evaluation:` and a Hugging Face `model-index:` in the
    metadata, an "## Evaluation" section in the text. Running it again replaces both; the
    card is rewritten in one rename."""
    card = Path(model_dir) / CARD_FILE
    _, meta_text, body = card.read_text().split("---\n", 2)
    meta = yaml.safe_load(meta_text) or {}
    meta["evaluation"] = {
        key: _rounded(evaluation[key])
        for key in (
            "perplexity",
            "test_poems",
            "label_shares",
            "fidelity",
            "lift",
            "distinct_1",
            "distinct_2",
            "n_samples",
            "label_counts",
            "judges",
            "sample_perplexity",
            "base_distinct_2",
            "config_key",
        )
        if key in evaluation
    }
    meta["evaluation"]["promotion"] = {"promoted": promoted, "reason": promotion}
    meta["model-index"] = _model_index(evaluation)
    start, end = body.find(EVALUATION_START), body.find(EVALUATION_END)
    if start != -1 and end != -1:
        body = body[:start] + body[end + len(EVALUATION_END) :]
    body = body.rstrip("\n") + "\n\n" + _evaluation_section(evaluation, promotion, promoted)
    with atomic_path(card) as tmp:
        tmp.write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n{body}")


def _rounded(value: Any) -> Any:
    """Four significant digits: enough to compare models, short enough to read in YAML."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _model_index(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The Hub's structured results: perplexity per test split, then the generation metrics."""
    emotion, evaluation = evaluation["emotion"], _rounded(evaluation)
    task = {"type": "text-generation", "name": "Text Generation"}
    results: list[dict[str, Any]] = [
        {
            "task": dict(task),  # a copy each: shared dicts would become YAML anchors
            "dataset": {
                "type": DATASET_ID,
                "name": f"emoverse {label} poems",
                "config": label,
                "split": "test",
            },
            "metrics": [{"type": "perplexity", "value": value, "name": f"{label} perplexity"}],
        }
        for label, value in evaluation["perplexity"].items()
        if value is not None
    ]
    generated = [
        {"type": "emotion-fidelity", "value": evaluation["fidelity"], "name": "fidelity"},
        *(
            [{"type": "emotion-lift", "value": evaluation["lift"], "name": "lift over base"}]
            if evaluation.get("lift") is not None
            else []
        ),
        *(
            [
                {
                    "type": "emotion-fidelity",
                    "value": judge["fidelity"]["share"],
                    "name": f"fidelity judged by {name}",
                }
                for name, judge in evaluation.get("judges", {}).items()
                if name != "nrc"
            ]
        ),
        *(
            [
                {
                    "type": "perplexity",
                    "value": evaluation["sample_perplexity"],
                    "name": "perplexity of its poems under the neutral base",
                }
            ]
            if evaluation.get("sample_perplexity") is not None
            else []
        ),
        {"type": "distinct-1", "value": evaluation["distinct_1"], "name": "distinct-1"},
        {"type": "distinct-2", "value": evaluation["distinct_2"], "name": "distinct-2"},
    ]
    results.append(
        {
            "task": dict(task),
            "dataset": {
                "type": "emoverse-samples",
                "name": f"poems sampled by the model (evaluation {evaluation['config_key']})",
            },
            "metrics": generated,
        }
    )
    return [{"name": model_name(emotion), "results": results}]


def _evaluation_section(evaluation: dict[str, Any], promotion: str, promoted: bool | None) -> str:
    emotion = evaluation["emotion"]
    ppl = ", ".join(
        f"{label} {value:.1f}" if value is not None else f"{label} n/a (no test poems)"
        for label, value in evaluation["perplexity"].items()
    )
    lift = evaluation.get("lift")
    if promoted is True:
        decision = f"promoted to champion: {promotion}"
    elif promoted is False:
        decision = f"registered, not promoted: {gate_reasons(promotion)}"
    else:
        decision = f"promotion: {promotion}"
    judges = "".join(
        f"- fidelity judged by {name}: {_share_text(judge['fidelity'])} of sampled poems "
        f"labelled **{emotion}**"
        + (
            f"; the base's share {_share_text(judge['base'])}, lift {judge['lift']:+.1%}, "
            f"one-sided Fisher exact p={judge['p_value']:.3g}"
            if judge.get("base")
            else ""
        )
        + "\n"
        for name, judge in evaluation.get("judges", {}).items()
    )
    if not judges:  # a record from before intervals
        judges = (
            f"- fidelity: {evaluation['fidelity']:.1%} of sampled poems tagged **{emotion}**"
            + (f" (lift over the base: {lift:+.1%})" if lift is not None else "")
            + "\n"
        )
    fluency = evaluation.get("sample_perplexity")
    base_d2 = evaluation.get("base_distinct_2")
    return (
        f"{EVALUATION_START}\n"
        "## Evaluation\n\n"
        f"- test perplexity: {ppl}\n"
        f"{judges}"
        f"- diversity: distinct-1 {evaluation['distinct_1']:.3f}, "
        f"distinct-2 {evaluation['distinct_2']:.3f}"
        + (f" (the base's {base_d2:.3f})" if base_d2 is not None else "")
        + "\n"
        + (
            f"- fluency: its poems' perplexity under the neutral base {fluency:.1f}\n"
            if fluency is not None
            else ""
        )
        + f"- {decision}\n"
        f"{EVALUATION_END}\n"
    )


def _share_text(share: dict[str, Any]) -> str:
    """`31.2% [20.9%, 43.4%] of 64`: a share with its 95% Wilson interval and n."""
    return f"{share['share']:.1%} [{share['low']:.1%}, {share['high']:.1%}] of {share['n']}"
