"""What the training stages hand each other: small records, never models or tables, and
torch-free, so that the flows which pass them on import quickly. The promotion rule that
decides over two evaluations is `models/evaluation/promotion.py`."""

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic.dataclasses import dataclass as validated

from emoverse.done import stage_key
from emoverse.emotions import LABELS, MODEL_PREFIX
from emoverse.stats import Share
from models.config import EvalSamples, PositiveInt

# Bump whenever the same model, data and config could give different numbers.
EVAL_VERSION = "2"
EVALUATION_FILE = "evaluation.json"  # a model folder's cached evaluation
# The judges of a generated poem's emotion: the lexicons of `emoverse.tagging` (named here,
# not imported, to keep this module light). "nrc" labelled the training poems and is the
# gate's judge; "empath" is independent of it.
JUDGES = ("nrc", "empath")
GATE_JUDGE = "nrc"
_LINEAGE = re.compile(rf"^({re.escape(MODEL_PREFIX)}[\w-]+) v(\d+)$")


def lineage_version(parent: str) -> tuple[str, int] | None:
    """(registered name, version) of a lineage written `emoverse-neutral v3`, else None. Only
    for what was written before the version was recorded as a field of its own (registry
    versions, model cards): everything newer reads that field."""
    found = _LINEAGE.match(parent)
    return (found.group(1), int(found.group(2))) if found else None


@dataclass(frozen=True)
class TrainedModel:
    emotion: str
    path: str
    parent: str
    data_fingerprint: str
    metrics: dict[str, Any]
    cached: bool = False  # an earlier run trained exactly this; its folder was reused
    parent_version: int | None = None  # `parent`'s registry version: a child's neutral base

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

    samples: EvalSamples = 64  # K poems generated per model: shares move in steps of 1/K
    seed: int = 0  # fixed seed: the same poems (and test subset) on every run
    max_new_tokens: PositiveInt = 80
    max_test_poems: PositiveInt | None = None  # per label: a seeded sample of big test splits
    batch_size: PositiveInt = 8  # poems per forward pass when scoring perplexity

    def key(self) -> str:
        """Names the settings that change results (batch size does not)."""
        settings = asdict(self)
        del settings["batch_size"]
        return stage_key([EVAL_VERSION, settings], 12)


@dataclass(frozen=True)
class Evaluation:
    emotion: str  # the model's emotion (neutral for the base)
    perplexity: dict[str, float | None]  # label -> on its test split; None: no test poems
    test_poems: dict[str, int]  # label -> poems scored
    label_shares: dict[str, float]  # nrc: all nine labels -> share of the K poems; sums to 1
    fidelity: float  # label_shares[emotion]
    lift: float | None  # fidelity - the base's share for this emotion; None without a base
    distinct_1: float
    distinct_2: float
    samples: list[str]  # the first SAMPLES_KEPT generated poems
    config_key: str
    n_samples: int = 0  # K
    # judge -> label -> how many of the K poems that judge gives that label
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # judge -> {"fidelity": Share, "base": Share | None, "lift", "p_value"}, as dicts
    judges: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample_perplexity: float | None = None  # the K poems under the neutral base: fluency
    base_distinct_2: float | None = None  # the base's, for the fluency guard

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Evaluation":
        """From `to_dict`'s output; `samples` may be left out (the registry keeps none), and
        the fields added since version 1 are empty in older records."""
        return cls(**{"samples": [], **{k: d[k] for k in cls.__dataclass_fields__ if k in d}})

    def share(self, label: str, judge: str = GATE_JUDGE) -> Share:
        """The share of the K poems that `judge` labels `label`, with its interval."""
        counts = self.label_counts.get(judge, {})
        return Share.of(counts.get(label, 0), self.n_samples)

    def fidelity_of(self, judge: str) -> Share:
        return self.share(self.emotion, judge)


def confusion_matrix(
    evaluations: Mapping[str, Evaluation], judge: str = GATE_JUDGE
) -> tuple[list[str], list[list[Share]]]:
    """(rows, matrix): one row per model present (by emotion, in LABELS order), one column per
    label (LABELS order); a cell is the share of that model's poems `judge` labels with that
    label, with its interval and n."""
    rows = [label for label in LABELS if label in evaluations]
    return rows, [[evaluations[row].share(col, judge) for col in LABELS] for row in rows]
