"""Evaluating a trained model: perplexity on held-out poems, emotion fidelity of what it writes,
diversity: the numbers the promotion rule (`models/evaluation/promotion.py`) decides on.

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

Plain functions over paths, like `models.training.stages`: a Prefect task, a test or a notebook
calls them. Results are cached in `<model_dir>/evaluation.json`, with the inputs they were
measured on: the same inputs reuse them.
"""

import json
import math
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emoverse.atomic import atomic_path
from emoverse.emotions import LABELS, NEUTRAL, check_label, control_token
from emoverse.stats import fisher_greater
from emoverse.tagging import TAGGER_VERSION, label_texts, read_manifest
from models.device import pick_device
from models.folders.model_folder import load_model
from models.generation.generate import GenerationRequest, PoemGenerator
from models.records import EVALUATION_FILE, GATE_JUDGE, JUDGES, EvalConfig, Evaluation
from models.training.data import IGNORE_INDEX, fingerprint, load_partition

SAMPLES_KEPT = 4  # generated poems kept in the record, for a human to read


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
    control: str | None = None,
) -> float:
    """`perplexity` with a model already loaded (one load for several test splits). With
    `control` (the conditional model) each poem is `control + bos + poem + eos` and the bos
    after the control token is context, not a target, so that the same tokens are scored as
    for a child."""
    if not texts:
        return math.nan
    device = pick_device()
    model.to(device).eval()
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prefix = [tokenizer.convert_tokens_to_ids(control)] if control is not None else []
    rows: list[tuple[list[int], int]] = []  # (window, leading positions that are no target)
    # verbose=False: poems longer than the context are expected, scored in windows below.
    for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        seq = [*prefix, bos, *ids, eos]
        stride = context - 1  # the window's first token is context for its second, no target
        starts = range(0, max(1, len(seq) - 1), stride)
        rows.extend((seq[i : i + context], len(prefix) if i == 0 else 0) for i in starts)
    rows.sort(key=lambda row: len(row[0]))  # similar lengths together: little padding
    total_nll, total_targets = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(r) for r, _ in batch)
        x = torch.tensor([r + [pad] * (width - len(r)) for r, _ in batch], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in batch])
        y = torch.tensor(
            [[IGNORE_INDEX] * (1 + skip) + r[1 + skip :] + [IGNORE_INDEX] * (width - len(r))
             for r, skip in batch],
            device=device,
        )  # fmt: skip
        logits = model(input_ids=x, attention_mask=mask.to(device)).logits
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
    conditional: bool = False,
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

    `conditional`: the model is the conditional one, evaluated as `emotion`'s model: its poems
    are prompted with `emotion`'s control token, each test split is scored with its own
    label's, and the result is kept in `<model_dir>/evaluation-<emotion>.json`.
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
        **({"conditional": True} if conditional else {}),
    }

    cache = model_dir / (conditional_evaluation_file(emotion) if conditional else EVALUATION_FILE)
    control = control_token(emotion) if conditional else None
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
            generator.model,
            generator.tokenizer,
            texts,
            batch_size=config.batch_size,
            control=control_token(lb) if conditional else None,
        )
        if texts
        else None
        for lb, (texts, _) in tests.items()
    }
    # One batched call from a fixed seed: the same K poems on every run.
    poems = generator.generate(
        GenerationRequest(
            n=config.samples,
            seed=config.seed,
            max_new_tokens=config.max_new_tokens,
            control=control,
        )
    )
    labels = {judge: label_texts(poems, **rule, lexicon=judge) for judge in JUDGES}
    shares = label_shares(labels[GATE_JUDGE])
    if base_dir is None:
        fluency = score_perplexity(generator.model, generator.tokenizer, poems, control=control)
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


def conditional_evaluation_file(emotion: str) -> str:
    """Where the conditional model's folder keeps its evaluation as `emotion`'s model."""
    return f"evaluation-{check_label(emotion)}.json"


def _write(path: Path, evaluation: Evaluation, inputs: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"inputs": inputs, "evaluation": evaluation.to_dict()}, indent=2))


# --- the family -------------------------------------------------------------------------------
