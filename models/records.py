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
from emoverse.judges import JUDGES as JUDGES  # re-exported: models name judges from here
from emoverse.stats import Share, fisher_greater, mann_whitney_greater
from models.config import EvalSamples, PositiveInt

# Bump whenever the same model, data and config could give different numbers.
EVAL_VERSION = "2"
EVALUATION_FILE = "evaluation.json"  # a model folder's cached evaluation
# The judges of a generated poem's emotion are `emoverse.judges.JUDGES`: "nrc" labelled the
# training poems and is the gate's judge; "empath" (a lexicon) and "nade" (a model of the
# whole text) are independent of it.
GATE_JUDGE = "nrc"
JUDGE_COLORS = ("#3b6db3", "#c0632b", "#3f8f4f")  # one per judge, in charts
JUDGE_NAMES = {"nrc": "NRC", "empath": "Empath", "nade": "NADE"}  # as people read them
# The judge independent of the training lexicon that the gate also asks: NADE agrees with
# people on 87% of the positive and negative verses it decides and decides 92% of them;
# Empath decides 18% (bench/calibrate_judges.py, bench/RESULTS.md).
INDEPENDENT_JUDGE = "nade"
# The judge whose per-poem intensities are kept: the gate's independent test ranks them.
INTENSITY_JUDGE = "nade"
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
    # judge -> emotion -> the K poems' intensities (INTENSITY_JUDGE only), in sample order:
    # all eight emotions for the neutral base, the model's own for a child (what a rank test
    # against the base needs, and all the registry has to keep)
    intensities: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # judge -> emotion -> mean intensity over the K poems, all eight emotions
    mean_intensities: dict[str, dict[str, float]] = field(default_factory=dict)

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

    def intensity(self, emotion: str, judge: str = INTENSITY_JUDGE) -> list[float]:
        """The K poems' `judge` intensities of `emotion` ([] in records without them)."""
        return self.intensities.get(judge, {}).get(emotion, [])


def _fisher_test(child: Evaluation, base: Evaluation, judge: str, against: str) -> tuple[bool, str]:
    """(passed, text) of Fisher's one-sided exact test that `judge` finds the child's emotion
    in more of its poems than in the base's."""
    if child.n_samples == 0 or base.n_samples == 0:  # records from before intervals
        mine, theirs = Share.of(0, 0), Share.of(0, 0)
    else:
        mine, theirs = child.fidelity_of(judge), base.share(child.emotion, judge)
    p = fisher_greater(mine.k, mine.n, theirs.k, theirs.n)
    ok = mine.n > 0 and theirs.n > 0 and p < ALPHA
    return ok, (
        f"{JUDGE_NAMES[judge]} fidelity {mine} {'beats' if ok else 'does not beat'} {against} "
        f"{theirs} (one-sided Fisher exact p={p:.3g}, {'<' if ok else '>='} {ALPHA})"
    )


def _rank_test(child: Evaluation, base: Evaluation, judge: str, against: str) -> tuple[bool, str]:
    """(passed, text) of the one-sided Mann-Whitney test that `judge`'s intensities of the
    child's emotion are higher in its poems than in the base's, with the effect size."""
    emotion = child.emotion
    mine, theirs = child.intensity(emotion, judge), base.intensity(emotion, judge)
    name = JUDGE_NAMES[judge]
    if not mine or not theirs:
        whose = "child" if not mine else against
        return False, f"no {name} {emotion} intensities for the {whose} to compare"
    test = mann_whitney_greater(mine, theirs)
    ok = test.p_value < ALPHA
    return ok, (
        f"{name} {emotion} intensity {sum(mine) / len(mine):.3f} "
        f"{'is above' if ok else 'is not above'} {against} {sum(theirs) / len(theirs):.3f} "
        f"(A={test.effect:.2f} [{test.low:.2f}, {test.high:.2f}], one-sided Mann-Whitney "
        f"p={test.p_value:.3g}, {'<' if ok else '>='} {ALPHA})"
    )


def judge_tests(
    child: Evaluation, base: Evaluation, *, against: str = "base"
) -> dict[str, tuple[bool, str]]:
    """Every judge's test of the child's emotion against the base, as (passed, text): NRC's and
    Empath's by Fisher's exact test on label shares, NADE's by the rank test on intensities."""
    return {
        judge: (
            _rank_test(child, base, judge, against)
            if judge == INTENSITY_JUDGE
            else _fisher_test(child, base, judge, against)
        )
        for judge in JUDGES
    }


def promotion_decision(
    child: Evaluation,
    base: Evaluation,
    *,
    against: str = "base",
    candidate: str = "child",
    independent: str | None = INDEPENDENT_JUDGE,
) -> tuple[bool, str]:
    """(promote, reason): a child becomes champion only if
    1. its emotion shows under the gate's judge (NRC, the partitions' lexicon): its fidelity
       beats the base's share, Fisher's exact one-sided test at ALPHA;
    2. and under an independent judge (INDEPENDENT_JUDGE, NADE): its poems' intensity of the
       emotion beats the base's, one-sided Mann-Whitney at ALPHA. Empath is reported, not
       gated: on human-labelled verse it decides too rarely (bench/RESULTS.md);
    3. its perplexity on its emotion's test poems is below the base's;
    4. its distinct-2 is no more than MAX_DISTINCT_2_DROP below the base's (fluency guard).
    The reason names every judge's test with its numbers and p-value, and what else failed;
    the model compared with as `against` and the one judged as `candidate`. `independent`
    None is the rule before the independent judge (NRC alone), kept to measure the change."""
    emotion = child.emotion
    tests = judge_tests(child, base, against=against)
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
    gated = (GATE_JUDGE, independent) if independent else (GATE_JUDGE,)
    checks = [*(tests[judge] for judge in gated), (ppl_ok, ppl_text), (fluent, fluency_text)]
    reported = [
        text if judge in gated else f"{text} (reported, not gated)"
        for judge, (_, text) in tests.items()
    ]
    if all(ok for ok, _ in checks):
        return True, "; ".join([*reported, ppl_text, fluency_text])
    failed = [text for ok, text in checks if not ok]
    # What failed first, then the judges' tests that did not fail: every judge is named.
    return False, NOT_PROMOTED + "; ".join([*failed, *(t for t in reported if t not in failed)])


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
