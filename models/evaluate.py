"""Evaluating a trained model: perplexity on held-out poems, emotion fidelity of what it writes,
diversity, and the gate that decides whether a child becomes its emotion's champion.

* Perplexity: exp of the mean next-token NLL over `bos + poem + eos` of each test poem, the
  framing the models were trained on; every poem is scored on its own (no packing, so no
  context leaks in from a neighbouring poem), pads never count.
* Fidelity: K poems sampled from a fixed seed in one batched `generate` call, labelled by two
  judges with the rule the partitions were tagged with (min_hits, min_margin, lemmatize,
  negation from their manifest): `nrc`, the lexicon the training poems were labelled with,
  and `empath`, an independent lexicon the models were not trained to please. Fidelity is
  the share of the K labelled with the model's own emotion, with its 95% Wilson interval
  and `n`; lift is that share minus the base model's share for the same emotion, and
  `p_value` Fisher's one-sided exact test that the child's share is greater.
* Fluency guard: the K poems' perplexity under the neutral base (a child cannot win by piling
  up emotion words in broken verse), and distinct-1 and distinct-2 over the K poems.

Plain functions over paths, like `models.stages`: a Prefect task, a test or a notebook calls
them. Results are cached in `<model_dir>/evaluation.json`.
"""

import hashlib
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emoverse.atomic import atomic_path
from emoverse.emotions import LABELS, NEUTRAL, check_label
from emoverse.stats import Share, fisher_greater
from emoverse.tagging import LEXICONS, TAGGER_VERSION, label_texts, read_manifest
from models.data import IGNORE_INDEX, fingerprint, load_partition
from models.generate import GenerationRequest, PoemGenerator
from models.modeling import load_model
from models.train import pick_device

EVALUATION_FILE = "evaluation.json"
# Bump whenever the same model, data and config could give different numbers.
EVAL_VERSION = "2"
SAMPLES_KEPT = 4  # generated poems kept in the record, for a human to read
JUDGES = LEXICONS  # "nrc" (the partitions' lexicon, the gate's judge), then "empath"
GATE_JUDGE = "nrc"
ALPHA = 0.05  # the gate's one-sided significance level
MAX_DISTINCT_2_DROP = 0.10  # a child whose distinct-2 is >10% below the base's is refused
# A new base may be this much worse in neutral test perplexity than the champion and still
# replace it: two bases of the same recipe and data differ by about this from seed alone.
BASE_PERPLEXITY_MARGIN = 0.02


@dataclass(frozen=True)
class EvalConfig:
    samples: int = 64  # K poems generated per model: shares move in steps of 1/K
    seed: int = 0  # fixed seed: the same poems (and test subset) on every run
    max_new_tokens: int = 80
    max_test_poems: int | None = None  # per label: a seeded sample of big test splits
    batch_size: int = 8  # poems per forward pass when scoring perplexity

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        if self.max_test_poems is not None and self.max_test_poems < 1:
            raise ValueError(f"max_test_poems must be at least 1, got {self.max_test_poems}")

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


# --- the measures -----------------------------------------------------------------------------


def perplexity(model_dir: str | Path, texts: Sequence[str], *, batch_size: int = 8) -> float:
    """exp(mean NLL per predicted token) of `bos + text + eos` for every text, each scored on
    its own. A poem longer than the model's context is cut into windows that overlap by one
    token, so every token after bos is predicted exactly once. NaN without texts."""
    if not texts:
        return math.nan
    model, tokenizer = load_model(model_dir)
    return score_perplexity(model, tokenizer, texts, batch_size=batch_size)


@torch.no_grad()
def score_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
) -> float:
    """`perplexity` with a model already loaded (one load for several test splits)."""
    if not texts:
        return math.nan
    device = pick_device()
    model.to(device).eval()
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows: list[list[int]] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        seq = [bos, *ids, eos]
        stride = context - 1  # the window's first token is context for its second, no target
        rows.extend(seq[i : i + context] for i in range(0, max(1, len(seq) - 1), stride))
    rows.sort(key=len)  # similar lengths together: little padding
    total_nll, total_targets = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(map(len, batch))
        x = torch.tensor([r + [pad] * (width - len(r)) for r in batch], device=device)
        y = torch.tensor([r + [IGNORE_INDEX] * (width - len(r)) for r in batch], device=device)
        logits = model(input_ids=x, attention_mask=(y != IGNORE_INDEX).long()).logits
        # Position t predicts token t+1; pads carry IGNORE_INDEX and add nothing.
        total_nll += float(
            F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                y[:, 1:].flatten(),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        )
        total_targets += int((y[:, 1:] != IGNORE_INDEX).sum())
    return math.exp(total_nll / total_targets)


_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    """Lowercased word tokens (runs of letters, digits, `_` and apostrophes); punctuation
    dropped, so "Night," and "night" are one word."""
    return _WORD.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique n-grams / all n-grams, pooled over `texts`; n-grams
    never span two texts. Tokens: `words`. 0.0 when there are no n-grams."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    grams = [
        tuple(tokens[i : i + n]) for tokens in map(words, texts) for i in range(len(tokens) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def label_shares(labels: Sequence[str]) -> dict[str, float]:
    """Share of each of the nine labels (all present, in LABELS order)."""
    return {label: labels.count(label) / len(labels) if labels else 0.0 for label in LABELS}


# --- one model --------------------------------------------------------------------------------


def _test_texts(
    partitions_dir: Path, label: str, config: EvalConfig, cache_dir: Path | None
) -> tuple[list[str], str]:
    """The label's test poems (a seeded sample when capped) and their fingerprint. The sample
    depends on the label and seed only, so the base and a child score the same poems."""
    ds = load_partition(partitions_dir, label, "test", cache_dir)
    if config.max_test_poems is not None and len(ds) > config.max_test_poems:
        picked = random.Random(f"{config.seed}:{label}").sample(
            range(len(ds)), config.max_test_poems
        )
        ds = ds.select(sorted(picked))
    return list(ds["text"]), fingerprint(ds)


def _tag_rule(partitions_dir: Path) -> dict[str, Any]:
    """The rule the partitions were labelled with: fidelity must judge by the same one."""
    options = (read_manifest(partitions_dir) or {}).get("options", {})
    return {
        "min_hits": int(options.get("min_hits", 1)),
        "min_margin": int(options.get("min_margin", 1)),
        "lemmatize": bool(options.get("lemmatize", False)),
        "negation": bool(options.get("negation", False)),
    }


def _with_base(evaluation: Evaluation, base: Evaluation | None) -> Evaluation:
    """Fill in what compares the model with the base: per judge the base's share for the
    model's emotion, the lift and the one-sided p-value; the base's distinct-2."""
    emotion = evaluation.emotion
    compared = base is not None and emotion != NEUTRAL and base.n_samples > 0
    judges = {}
    for judge in evaluation.label_counts:
        own = evaluation.fidelity_of(judge)
        entry: dict[str, Any] = {"fidelity": own.to_dict(), "base": None, "lift": None}
        entry["p_value"] = None
        if compared:
            theirs = base.share(emotion, judge)
            entry.update(
                base=theirs.to_dict(),
                lift=own.share - theirs.share,
                p_value=fisher_greater(own.k, own.n, theirs.k, theirs.n),
            )
        judges[judge] = entry
    lift = None
    if base is not None and emotion != NEUTRAL:
        lift = evaluation.fidelity - base.label_shares[emotion]
    return Evaluation.from_dict(
        {
            **evaluation.to_dict(),
            "lift": lift,
            "judges": judges,
            "base_distinct_2": base.distinct_2 if base is not None else None,
        }
    )


def evaluate_model(
    model_dir: str | Path,
    emotion: str,
    partitions_dir: Path,
    *,
    labels_for_perplexity: Sequence[str] | None = None,
    base: Evaluation | None = None,
    base_dir: str | Path | None = None,
    config: EvalConfig = EvalConfig(),
    cache_dir: Path | None = None,
) -> Evaluation:
    """Evaluate the model in `model_dir`, trained for `emotion`; `base_dir` is the neutral
    base's folder, whose perplexity of the model's samples is the fluency guard (the base
    itself, `base_dir` None, is scored by itself).

    Perplexity is measured on the test split of each of `labels_for_perplexity` (default: all
    nine for the neutral base, so every child can be compared with it on its own emotion;
    the emotion and neutral for a child); a label without test poems gets None. With `base`
    (the neutral base's evaluation) the lift, the base's shares and the p-values are filled in.

    The result is kept in `<model_dir>/evaluation.json` with what it was computed from (config,
    test poems, tagging rule, tagger version); a rerun with the same inputs reads it back
    without generating or scoring anything (a different `base` only recomputes the lift).
    """
    check_label(emotion)
    model_dir, partitions_dir = Path(model_dir), Path(partitions_dir)
    if labels_for_perplexity is None:
        labels_for_perplexity = LABELS if emotion == NEUTRAL else (emotion, NEUTRAL)
    wanted = {check_label(lb) for lb in labels_for_perplexity}
    labels = [lb for lb in LABELS if lb in wanted]
    tests = {lb: _test_texts(partitions_dir, lb, config, cache_dir) for lb in labels}
    rule = _tag_rule(partitions_dir)
    inputs = {
        "config": config.key(),
        "emotion": emotion,
        "test_fingerprints": {lb: fp for lb, (_, fp) in tests.items()},
        "tag_rule": rule,
        "tagger_version": TAGGER_VERSION,
        "fluency_judge": str(Path(base_dir).resolve()) if base_dir is not None else None,
    }

    cache = model_dir / EVALUATION_FILE
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("inputs") == inputs:
            cached = Evaluation.from_dict(stored["evaluation"])
            evaluation = _with_base(cached, base)
            if evaluation != cached:
                _write(cache, evaluation, inputs)
            return evaluation

    generator = PoemGenerator(model_dir)  # one load serves both scoring and sampling
    ppl: dict[str, float | None] = {
        lb: score_perplexity(
            generator.model, generator.tokenizer, texts, batch_size=config.batch_size
        )
        if texts
        else None
        for lb, (texts, _) in tests.items()
    }
    # One batched call from a fixed seed: the same K poems on every run.
    poems = generator.generate(
        GenerationRequest(n=config.samples, seed=config.seed, max_new_tokens=config.max_new_tokens)
    )
    labels = {judge: label_texts(poems, **rule, lexicon=judge) for judge in JUDGES}
    shares = label_shares(labels[GATE_JUDGE])
    if base_dir is None:
        fluency = score_perplexity(generator.model, generator.tokenizer, poems)
    else:
        base_model, base_tokenizer = load_model(base_dir)
        fluency = score_perplexity(base_model, base_tokenizer, poems)
        del base_model
    evaluation = Evaluation(
        emotion=emotion,
        perplexity=ppl,
        test_poems={lb: len(texts) for lb, (texts, _) in tests.items()},
        label_shares=shares,
        fidelity=shares[emotion],
        lift=None,
        distinct_1=distinct_n(poems, 1),
        distinct_2=distinct_n(poems, 2),
        samples=poems[:SAMPLES_KEPT],
        config_key=config.key(),
        n_samples=len(poems),
        label_counts={j: {lb: got.count(lb) for lb in LABELS} for j, got in labels.items()},
        sample_perplexity=None if math.isnan(fluency) else fluency,
    )
    evaluation = _with_base(evaluation, base)
    _write(cache, evaluation, inputs)
    return evaluation


def _write(path: Path, evaluation: Evaluation, inputs: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"inputs": inputs, "evaluation": evaluation.to_dict()}, indent=2))


# --- the family -------------------------------------------------------------------------------


def promotion_decision(child: Evaluation, base: Evaluation) -> tuple[bool, str]:
    """(promote, reason): a child becomes champion only if
    1. its fidelity beats the base's share for its emotion with confidence: Fisher's exact
       one-sided test at ALPHA, under the gate's judge (the partitions' lexicon);
    2. its perplexity on its emotion's test poems is below the base's;
    3. its distinct-2 is no more than MAX_DISTINCT_2_DROP below the base's (fluency guard).
    The reason names the numbers, the test and its p-value either way."""
    emotion = child.emotion
    if child.n_samples == 0 or base.n_samples == 0:  # records from before intervals
        mine, theirs = Share.of(0, 0), Share.of(0, 0)
    else:
        mine, theirs = child.fidelity_of(GATE_JUDGE), base.share(emotion, GATE_JUDGE)
    p = fisher_greater(mine.k, mine.n, theirs.k, theirs.n)
    fidelity_ok = mine.n > 0 and theirs.n > 0 and p < ALPHA
    fidelity_text = (
        f"fidelity {mine} {'beats' if fidelity_ok else 'does not beat'} base {theirs} "
        f"(one-sided Fisher exact p={p:.3g}, {'<' if fidelity_ok else '>='} {ALPHA})"
    )
    child_ppl, base_ppl = child.perplexity.get(emotion), base.perplexity.get(emotion)
    if child_ppl is None or base_ppl is None:
        whose = "child" if child_ppl is None else "base"
        ppl_ok = False
        ppl_text = f"no {emotion} test perplexity for the {whose} to compare (no test poems)"
    else:
        ppl_ok = child_ppl < base_ppl
        ppl_text = (
            f"perplexity {child_ppl:.1f} < base {base_ppl:.1f}"
            if ppl_ok
            else f"perplexity {child_ppl:.1f} is not below base {base_ppl:.1f}"
        )
    floor = (1 - MAX_DISTINCT_2_DROP) * base.distinct_2
    fluent = child.distinct_2 >= floor
    fluency_text = (
        f"distinct-2 {child.distinct_2:.2f} {'>=' if fluent else '<'} {floor:.2f} "
        f"({1 - MAX_DISTINCT_2_DROP:.0%} of the base's {base.distinct_2:.2f})"
    )
    checks = [(fidelity_ok, fidelity_text), (ppl_ok, ppl_text), (fluent, fluency_text)]
    if all(ok for ok, _ in checks):
        return True, "; ".join(text for _, text in checks)
    return False, "not promoted: " + "; ".join(text for ok, text in checks if not ok)


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
    return False, (
        f"not promoted: neutral perplexity {new_ppl:.1f} is more than {margin:.0%} worse than "
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
