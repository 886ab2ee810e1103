"""What the training stages hand each other: small records, never models or tables, and
torch-free, so that the flows which pass them on import quickly. Also the promotion gate,
which decides over two evaluations."""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic.dataclasses import dataclass as validated

from emoverse.emotions import LABELS, NEUTRAL
from emoverse.stats import Share, fisher_greater
from models.config import EvalSamples, PositiveInt

# Bump whenever the same model, data and config could give different numbers.
EVAL_VERSION = "2"
EVALUATION_FILE = "evaluation.json"  # a model folder's cached evaluation
# The judges of a generated poem's emotion: the lexicons of `emoverse.tagging` (named here,
# not imported, to keep this module light). "nrc" labelled the training poems and is the
# gate's judge; "empath" is independent of it.
JUDGES = ("nrc", "empath")
GATE_JUDGE = "nrc"
ALPHA = 0.05  # the gate's one-sided significance level
MAX_DISTINCT_2_DROP = 0.10  # a child whose distinct-2 is >10% below the base's is refused
# A new base may be this much worse in neutral test perplexity than the champion and still
# replace it. Reseeding alone moved it by 0.3-0.4% on bench/quality.py's 112 neutral test poems
# (bench/RESULTS.md); 2% leaves room for the demo run's ten times smaller test split.
BASE_PERPLEXITY_MARGIN = 0.02
# How a refused model's reason starts (the registry's `promotion` tag, the card, the CLI), once:
# whoever quotes a reason inside a sentence of its own takes it off (`gate_reasons`).
NOT_PROMOTED = "not promoted: "


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

    samples: EvalSamples = 64  # K poems generated per model: shares move in steps of 1/K
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


def promotion_decision(
    child: Evaluation, base: Evaluation, *, against: str = "base", candidate: str = "child"
) -> tuple[bool, str]:
    """(promote, reason): a child becomes champion only if
    1. its fidelity beats the base's share for its emotion with confidence: Fisher's exact
       one-sided test at ALPHA, under the gate's judge (the partitions' lexicon);
    2. its perplexity on its emotion's test poems is below the base's;
    3. its distinct-2 is no more than MAX_DISTINCT_2_DROP below the base's (fluency guard).
    The reason names the numbers, the test and its p-value either way, the model compared
    with as `against` and the one judged as `candidate`."""
    emotion = child.emotion
    if child.n_samples == 0 or base.n_samples == 0:  # records from before intervals
        mine, theirs = Share.of(0, 0), Share.of(0, 0)
    else:
        mine, theirs = child.fidelity_of(GATE_JUDGE), base.share(emotion, GATE_JUDGE)
    p = fisher_greater(mine.k, mine.n, theirs.k, theirs.n)
    fidelity_ok = mine.n > 0 and theirs.n > 0 and p < ALPHA
    fidelity_text = (
        f"fidelity {mine} {'beats' if fidelity_ok else 'does not beat'} {against} {theirs} "
        f"(one-sided Fisher exact p={p:.3g}, {'<' if fidelity_ok else '>='} {ALPHA})"
    )
    child_ppl, base_ppl = child.perplexity.get(emotion), base.perplexity.get(emotion)
    if child_ppl is None or base_ppl is None:
        whose = candidate if child_ppl is None else against
        ppl_ok = False
        ppl_text = f"no {emotion} test perplexity for the {whose} to compare (no test poems)"
    else:
        ppl_ok = child_ppl < base_ppl
        ppl_text = (
            f"perplexity {child_ppl:.1f} < {against} {base_ppl:.1f}"
            if ppl_ok
            else f"perplexity {child_ppl:.1f} is not below {against} {base_ppl:.1f}"
        )
    floor = (1 - MAX_DISTINCT_2_DROP) * base.distinct_2
    fluent = child.distinct_2 >= floor
    fluency_text = (
        f"distinct-2 {child.distinct_2:.2f} {'>=' if fluent else '<'} {floor:.2f} "
        f"({1 - MAX_DISTINCT_2_DROP:.0%} of the {against}'s {base.distinct_2:.2f})"
    )
    checks = [(fidelity_ok, fidelity_text), (ppl_ok, ppl_text), (fluent, fluency_text)]
    if all(ok for ok, _ in checks):
        return True, "; ".join(text for _, text in checks)
    return False, NOT_PROMOTED + "; ".join(text for ok, text in checks if not ok)


def gate_reasons(promotion: str) -> str:
    """A promotion reason without its verdict ("not promoted: "), to quote in a sentence that
    already says so."""
    return promotion.removeprefix(NOT_PROMOTED)


def preference_decision(
    conditional: Evaluation, child: Evaluation | None, *, child_name: str = "child"
) -> tuple[bool, str]:
    """(the conditional model is preferred, reason) for one emotion: it must beat the
    emotion's child by the promotion rule, the child in the base's place (fidelity by
    Fisher's test, own-emotion perplexity, distinct-2); the child, the incumbent, keeps the
    emotion otherwise. Without a child to compare with, the conditional model is preferred."""
    if child is None:
        return True, f"no {child_name} to compare with"
    better, reason = promotion_decision(
        conditional, child, against=child_name, candidate="conditional model"
    )
    return better, reason.replace("not promoted: ", f"{child_name} kept: ")


def base_promotion_decision(
    new: Evaluation, champion: Evaluation | None, *, margin: float = BASE_PERPLEXITY_MARGIN
) -> tuple[bool, str]:
    """(promote, reason) for a new neutral base: champion unless its perplexity on the neutral
    test split is more than `margin` worse than the current champion's on the same poems."""
    new_ppl = new.perplexity.get(NEUTRAL)
    if champion is None:
        return True, "the first neutral base"
    old_ppl = champion.perplexity.get(NEUTRAL)
    if new_ppl is None or old_ppl is None:
        return True, "no neutral test poems to compare the bases on"
    limit = old_ppl * (1 + margin)
    if new_ppl <= limit:
        return True, (
            f"neutral perplexity {new_ppl:.1f} is within {margin:.0%} of the champion's "
            f"{old_ppl:.1f}"
        )
    return False, NOT_PROMOTED + (
        f"neutral perplexity {new_ppl:.1f} is more than {margin:.0%} worse than "
        f"the champion's {old_ppl:.1f}"
    )


def confusion_matrix(
    evaluations: Mapping[str, Evaluation], judge: str = GATE_JUDGE
) -> tuple[list[str], list[list[Share]]]:
    """(rows, matrix): one row per model present (by emotion, in LABELS order), one column per
    label (LABELS order); a cell is the share of that model's poems `judge` labels with that
    label, with its interval and n."""
    rows = [label for label in LABELS if label in evaluations]
    return rows, [[evaluations[row].share(col, judge) for col in LABELS] for row in rows]
