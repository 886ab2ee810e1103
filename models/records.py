"""What the training stages hand each other: small records, never models or tables, and
torch-free, so that the flows which pass them on import quickly. Also the promotion gate,
which decides over two evaluations."""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pydantic.dataclasses import dataclass as validated

from emoverse.emotions import LABELS
from models.config import EvalSamples, PositiveInt

# Bump whenever the same model, data and config could give different numbers.
EVAL_VERSION = "1"


@dataclass(frozen=True)
class TrainedModel:
    emotion: str
    path: str
    parent: str
    data_fingerprint: str
    metrics: dict[str, Any]
    cached: bool = False  # an earlier run trained exactly this; its folder was reused

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SkippedModel:
    emotion: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FailedModel:
    """A model whose training (or evaluation or registration) failed; `reason` says how."""

    emotion: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@validated(frozen=True)
class EvalConfig:
    """How a model is evaluated; checked against the bounds in models/config.py."""

    samples: EvalSamples = 16  # K poems generated per model
    seed: int = 0  # fixed seed: the same poems (and test subset) on every run
    max_new_tokens: PositiveInt = 80
    max_test_poems: PositiveInt | None = None  # per label: a seeded sample of big test splits
    batch_size: PositiveInt = 8  # poems per forward pass when scoring perplexity

    def key(self) -> str:
        """Names the settings that change results (batch size does not)."""
        settings = asdict(self)
        del settings["batch_size"]
        blob = json.dumps([EVAL_VERSION, settings], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Evaluation:
    emotion: str  # the model's emotion (neutral for the base)
    perplexity: dict[str, float | None]  # label -> on its test split; None: no test poems
    test_poems: dict[str, int]  # label -> poems scored
    label_shares: dict[str, float]  # all nine labels -> share of the K poems; sums to 1
    fidelity: float  # label_shares[emotion]
    lift: float | None  # fidelity - the base's share for this emotion; None without a base
    distinct_1: float
    distinct_2: float
    samples: list[str]  # the first SAMPLES_KEPT generated poems
    config_key: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Evaluation":
        """From `to_dict`'s output; `samples` may be left out (the registry keeps none)."""
        return cls(**{"samples": [], **{k: d[k] for k in cls.__dataclass_fields__ if k in d}})


def promotion_decision(child: Evaluation, base: Evaluation) -> tuple[bool, str]:
    """(promote, reason): a child becomes champion only if its fidelity beats the base's share
    for its emotion and its perplexity on its emotion's test poems is below the base's. The
    reason names the numbers either way."""
    emotion = child.emotion
    base_share = base.label_shares[emotion]
    child_ppl, base_ppl = child.perplexity.get(emotion), base.perplexity.get(emotion)
    fidelity_ok = child.fidelity > base_share
    fidelity_text = (
        f"fidelity {child.fidelity:.2f} > base {base_share:.2f}"
        if fidelity_ok
        else f"fidelity {child.fidelity:.2f} does not beat base {base_share:.2f}"
    )
    if child_ppl is None or base_ppl is None:
        whose = "child" if child_ppl is None else "base"
        return False, (
            f"not promoted: no {emotion} test perplexity for the {whose} to compare "
            f"(no test poems); {fidelity_text}"
        )
    ppl_ok = child_ppl < base_ppl
    ppl_text = (
        f"perplexity {child_ppl:.1f} < base {base_ppl:.1f}"
        if ppl_ok
        else f"perplexity {child_ppl:.1f} is not below base {base_ppl:.1f}"
    )
    if fidelity_ok and ppl_ok:
        return True, f"{fidelity_text} and {ppl_text}"
    failed = [text for ok, text in ((fidelity_ok, fidelity_text), (ppl_ok, ppl_text)) if not ok]
    return False, "not promoted: " + "; ".join(failed)


def confusion_matrix(
    evaluations: Mapping[str, Evaluation],
) -> tuple[list[str], list[list[float]]]:
    """(rows, matrix): one row per model present (by emotion, in LABELS order), one column per
    label (LABELS order); a cell is the share of that model's poems tagged with that label."""
    rows = [label for label in LABELS if label in evaluations]
    return rows, [[evaluations[row].label_shares[col] for col in LABELS] for row in rows]
