"""Evaluation: perplexity, distinct-n, fidelity from generated poems, caching, the promotion
gate, the confusion matrix, the card section and its chart. Real tiny models, real partitions,
the real tagger."""

import dataclasses
import json
import math
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import torch
import yaml

import models.evaluation.evaluate as ev
from emoverse.corpus import book_to_rows
from emoverse.emotions import LABELS, NEUTRAL
from emoverse.errors import UnknownEmotionError
from emoverse.report import plot_confusion_matrix
from emoverse.schema import POEM_SCHEMA
from emoverse.stats import fisher_greater, wilson_interval
from emoverse.tagging import label_texts, tag_table, write_version
from models.config import TrainConfig
from models.evaluation.evaluate import (
    EVALUATION_FILE,
    EvalConfig,
    Evaluation,
    distinct_n,
    evaluate_model,
    perplexity,
)
from models.evaluation.promotion import (
    ALPHA,
    FISHER,
    Check,
    Decision,
    base_promotion_decision,
    child_promotion_decision,
    conditional_promotion_decision,
    gate_reasons,
    preference_decision,
    promotion_decision,
)
from models.folders.card import CARD_FILE, add_evaluation_to_card, read_card_metadata, save_model
from models.folders.model_folder import build_scratch_model, load_model
from models.generation.generate import generate_poems
from models.records import confusion_matrix
from models.training.data import load_partition
from models.training.loop import fine_tune

QUICK = TrainConfig(batch_size=8, block_size=64, learning_rate=3e-3, warmup_steps=2, max_steps=4)
FAST = EvalConfig(samples=6, seed=3, max_new_tokens=24)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A 1.4M-parameter model gains nothing from a second thread, and on a shared 2-core
    machine the threads' spin-waits make sampling ~10x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sonnet_rows(gutenberg_dir) -> list[dict]:
    return book_to_rows(1041, (gutenberg_dir / "cache/epub/1041/pg1041.txt").read_bytes())


@pytest.fixture(scope="module")
def sonnets(sonnet_rows) -> list[str]:
    return [row["text"] for row in sonnet_rows]


@pytest.fixture(scope="module")
def tagged(sonnet_rows) -> pa.Table:
    return tag_table(pa.Table.from_pylist(sonnet_rows, schema=POEM_SCHEMA))


@pytest.fixture(scope="module")
def partitions(tagged, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "partitions"
    splits = write_version(tagged, out)["splits"]
    # What the tests below rely on: joy and neutral have test poems, surprise has none.
    assert splits["joy"]["test"] > 0 and splits[NEUTRAL]["test"] > 0
    assert splits["surprise"]["test"] == 0
    assert splits["fear"]["train"] > 0 and splits["fear"]["test"] == 0
    return out


@pytest.fixture(scope="module")
def trained(sonnets, tmp_path_factory) -> Path:
    """A scratch:tiny model after a few real steps on the sonnets, saved with its card."""
    root = tmp_path_factory.mktemp("eval-model")
    init = build_scratch_model("scratch:tiny", sonnets, root / "init")
    tuned = fine_tune(init, sonnets[:60], [], QUICK)
    return save_model(
        tuned, root / "joy", emotion="joy", parent="init", data_fingerprint="f" * 64, config=QUICK
    )


@pytest.fixture(scope="module")
def joy_eval(trained, partitions, tmp_path_factory) -> tuple[Path, Evaluation]:
    """The trained model evaluated once as a joy child: (its folder, with the record; the
    result)."""
    folder = Path(shutil.copytree(trained, tmp_path_factory.mktemp("evaluated") / "joy"))
    return folder, evaluate_model(folder, "joy", partitions, config=FAST)


@pytest.fixture
def model_dir(joy_eval, tmp_path) -> Path:
    """A private copy of the evaluated folder: evaluation writes its record into it."""
    return Path(shutil.copytree(joy_eval[0], tmp_path / "joy"))


def _evaluation(
    emotion: str,
    shares: dict[str, float],
    ppl: dict[str, float | None],
    *,
    n: int = 64,
    distinct_2: float = 0.9,
):
    """An evaluation of n samples whose labels (both judges alike) have these shares."""
    counts = {label: round(shares.get(label, 0.0) * n) for label in LABELS}
    full = {label: counts[label] / n for label in LABELS}
    return Evaluation(
        emotion=emotion,
        perplexity=ppl,
        test_poems={label: 0 if value is None else 5 for label, value in ppl.items()},
        label_shares=full,
        fidelity=full[emotion],
        lift=None,
        distinct_1=0.5,
        distinct_2=distinct_2,
        samples=["a poem"],
        config_key="k",
        n_samples=n,
        label_counts={"nrc": counts, "empath": dict(counts)},
    )


# --- perplexity -------------------------------------------------------------------------------


def test_perplexity_is_the_models_own_loss_with_pads_masked(trained, sonnets):
    model, tokenizer = load_model(trained)
    model.eval()

    def nll(text: str) -> tuple[float, int]:  # (summed NLL, targets) of bos + text + eos
        ids = [tokenizer.bos_token_id, *tokenizer(text)["input_ids"], tokenizer.eos_token_id]
        x = torch.tensor([ids])
        with torch.no_grad():
            return float(model(input_ids=x, labels=x).loss) * (len(ids) - 1), len(ids) - 1

    short, long = sonnets[3][:80], sonnets[4]
    assert perplexity(trained, [short]) == pytest.approx(math.exp(nll(short)[0] / nll(short)[1]))
    # In one padded batch: the token-weighted mean of the two, as if scored apart.
    (a, n), (b, m) = nll(short), nll(long)
    both = math.exp((a + b) / (n + m))
    assert perplexity(trained, [short, long], batch_size=2) == pytest.approx(both, rel=1e-5)
    assert perplexity(trained, [short, long], batch_size=1) == pytest.approx(both, rel=1e-5)
    assert math.isnan(perplexity(trained, []))


def test_a_poem_longer_than_the_context_is_scored_in_overlapping_windows(trained, sonnets):
    model, tokenizer = load_model(trained)
    model.eval()
    context = model.config.n_positions
    text = "\n\n".join(sonnets[:6])
    ids = [tokenizer.bos_token_id, *tokenizer(text)["input_ids"], tokenizer.eos_token_id]
    assert len(ids) > 2 * context  # three windows
    total = 0.0
    for start in range(0, len(ids) - 1, context - 1):
        window = torch.tensor([ids[start : start + context]])
        with torch.no_grad():
            total += float(model(input_ids=window, labels=window).loss) * (window.shape[1] - 1)
    # Every token after bos is predicted exactly once.
    assert perplexity(trained, [text]) == pytest.approx(math.exp(total / (len(ids) - 1)), rel=1e-5)


def test_perplexity_is_lower_on_the_poems_it_learned_than_on_junk(trained, sonnets):
    rng = random.Random(0)
    junk = [
        " ".join("".join(rng.choices("qxzjvkwy", k=rng.randint(3, 9))) for _ in range(40))
        for _ in range(5)
    ]
    on_sonnets, on_junk = perplexity(trained, sonnets[:10]), perplexity(trained, junk)
    assert 1.0 < on_sonnets < on_junk
    assert math.isfinite(on_junk)


# --- distinct-n -------------------------------------------------------------------------------


def test_distinct_n_by_hand():
    assert distinct_n(["the cat the cat"], 1) == 0.5  # the, cat / 4
    assert distinct_n(["the cat the cat"], 2) == pytest.approx(2 / 3)  # (the cat) twice
    assert distinct_n(["Night, night!"], 1) == 0.5  # lowercased, punctuation dropped
    assert distinct_n(["a b", "b a"], 2) == 1.0  # no (b, b) across the two poems
    assert distinct_n(["a b", "a b"], 2) == 0.5  # pooled over poems
    assert distinct_n(["one"], 2) == 0.0 and distinct_n([], 1) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


# --- one model --------------------------------------------------------------------------------


def test_evaluate_model_measures_what_it_generates(joy_eval, partitions):
    folder, result = joy_eval
    assert set(result.perplexity) == {"joy", NEUTRAL}  # a child: its emotion and neutral
    joy_test = load_partition(partitions, "joy", "test")["text"]
    assert result.perplexity["joy"] == pytest.approx(perplexity(folder, joy_test), rel=1e-6)
    assert result.test_poems["joy"] == len(joy_test)
    # The same K poems from the same seed, in one call, labelled by the project's tagger.
    poems = generate_poems(folder, n=FAST.samples, seed=FAST.seed, max_new_tokens=24)
    labels = label_texts(poems)
    assert result.label_shares == {lb: labels.count(lb) / len(poems) for lb in LABELS}
    assert result.n_samples == FAST.samples
    assert result.label_counts["nrc"] == {lb: labels.count(lb) for lb in LABELS}
    empath = label_texts(poems, lexicon="empath")
    assert result.label_counts["empath"] == {lb: empath.count(lb) for lb in LABELS}
    # Every judge's fidelity carries its interval and n, with or without a base.
    for judge in ("nrc", "empath"):
        fidelity = result.judges[judge]["fidelity"]
        assert fidelity["n"] == FAST.samples and fidelity["k"] == result.label_counts[judge]["joy"]
        assert 0.0 <= fidelity["low"] <= fidelity["share"] <= fidelity["high"] <= 1.0
        assert result.judges[judge]["base"] is None and result.judges[judge]["p_value"] is None
    # The fluency guard: without a base folder, the model's own perplexity of its samples.
    assert result.sample_perplexity == pytest.approx(perplexity(folder, poems), rel=1e-6)
    assert sum(result.label_shares.values()) == pytest.approx(1.0)
    assert result.fidelity == result.label_shares["joy"]
    assert result.distinct_1 == distinct_n(poems, 1)
    assert result.distinct_2 == distinct_n(poems, 2)
    assert result.samples == poems[: ev.SAMPLES_KEPT]
    assert result.lift is None and result.config_key == FAST.key()
    assert Evaluation.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_evaluate_model_reuses_its_record_and_is_deterministic(
    joy_eval, model_dir, partitions, monkeypatch
):
    first = joy_eval[1]
    real_generate, real_score = ev.PoemGenerator.generate, ev.score_perplexity
    calls: list[int] = []

    def counting_generate(self, request):
        calls.append(request.n)
        return real_generate(self, request)

    def no_scoring(*args, **kwargs):
        raise AssertionError("perplexity scored again")

    monkeypatch.setattr(ev.PoemGenerator, "generate", counting_generate)
    monkeypatch.setattr(ev, "score_perplexity", no_scoring)
    assert evaluate_model(model_dir, "joy", partitions, config=FAST) == first
    # A base only changes the lift: still nothing generated or scored, and the record updated.
    base = _evaluation(NEUTRAL, {"joy": 0.25, NEUTRAL: 0.75}, {"joy": 900.0, NEUTRAL: 900.0})
    with_base = evaluate_model(model_dir, "joy", partitions, base=base, config=FAST)
    assert with_base.lift == pytest.approx(first.fidelity - 0.25)
    nrc = with_base.judges["nrc"]
    assert (nrc["base"]["k"], nrc["base"]["n"], nrc["base"]["share"]) == (16, 64, 0.25)
    assert nrc["lift"] == pytest.approx(first.fidelity - 0.25)
    assert nrc["p_value"] == fisher_greater(nrc["fidelity"]["k"], FAST.samples, 16, 64)
    assert with_base.base_distinct_2 == base.distinct_2
    stored = json.loads((model_dir / EVALUATION_FILE).read_text())["evaluation"]
    assert stored["lift"] == with_base.lift
    assert calls == []

    monkeypatch.setattr(ev, "score_perplexity", real_score)
    (model_dir / EVALUATION_FILE).unlink()
    assert evaluate_model(model_dir, "joy", partitions, config=FAST) == first  # recomputed
    assert calls == [FAST.samples]  # in one batched call
    other = evaluate_model(
        model_dir, "joy", partitions, config=EvalConfig(samples=2, seed=3, max_new_tokens=8)
    )
    assert calls == [FAST.samples, 2]  # another config is measured afresh
    assert other.config_key != first.config_key
    assert sum(other.label_shares.values()) == pytest.approx(1.0)


def test_the_base_is_scored_on_all_nine_test_splits_empty_ones_give_none(model_dir, partitions):
    (model_dir / EVALUATION_FILE).unlink()
    base = evaluate_model(model_dir, NEUTRAL, partitions, config=FAST)
    assert list(base.perplexity) == list(LABELS)
    assert base.fidelity == base.label_shares[NEUTRAL] and base.lift is None
    # surprise has no poems at all, fear has training poems but none in test.
    assert base.perplexity["surprise"] is None and base.test_poems["surprise"] == 0
    assert base.perplexity["fear"] is None and base.test_poems["fear"] == 0
    assert base.perplexity["joy"] is not None
    # The same folder judged as a surprise child: no test poems, so no promotion.
    child = evaluate_model(model_dir, "surprise", partitions, base=base, config=FAST)
    assert child.perplexity == {"surprise": None, NEUTRAL: base.perplexity[NEUTRAL]}
    assert child.lift == pytest.approx(child.fidelity - base.label_shares["surprise"])
    decision = promotion_decision(child, base)
    assert not decision.promoted
    assert "no surprise test perplexity for the child" in decision.text
    with pytest.raises(UnknownEmotionError):
        evaluate_model(model_dir, "joy", partitions, labels_for_perplexity=["joyful"])


def test_fidelity_judges_by_the_rule_the_partitions_were_tagged_with(
    joy_eval, model_dir, tagged, tmp_path
):
    default = joy_eval[1]
    assert default.label_shares[NEUTRAL] < 1.0  # the tiny model's poems do hit the lexicon
    strict = tmp_path / "strict"
    write_version(
        tagged, strict, info={"options": {"min_hits": 10_000, "min_margin": 1, "lemmatize": False}}
    )
    judged = evaluate_model(model_dir, "joy", strict, config=FAST)  # a new rule: not reused
    assert judged.label_shares[NEUTRAL] == 1.0 and judged.fidelity == 0.0
    assert judged.samples == default.samples


def test_a_capped_test_split_is_the_same_sample_for_every_model(partitions):
    capped = EvalConfig(max_test_poems=2)
    texts, fp = ev._test_texts(partitions, "joy", capped, None)
    assert len(texts) == 2
    assert set(texts) <= set(load_partition(partitions, "joy", "test")["text"])
    assert ev._test_texts(partitions, "joy", capped, None) == (texts, fp)
    assert capped.key() != EvalConfig().key()
    assert EvalConfig(batch_size=1).key() == EvalConfig().key()  # batching changes no number
    with pytest.raises(ValueError):
        EvalConfig(samples=0)


# --- the family -------------------------------------------------------------------------------


def test_promotion_needs_significant_fidelity_lower_perplexity_and_fluency():
    # 8 of 64 against 20 of 64: Fisher's one-sided exact p is about 0.01.
    base = _evaluation(NEUTRAL, {"joy": 8 / 64, NEUTRAL: 56 / 64}, {"joy": 250.9, NEUTRAL: 240.0})
    good = _evaluation("joy", {"joy": 20 / 64, NEUTRAL: 44 / 64}, {"joy": 210.4, NEUTRAL: 300.0})
    p = fisher_greater(20, 64, 8, 64)
    assert 0.001 < p < 0.05
    decision = promotion_decision(good, base)
    assert decision.promoted
    assert decision.text == (
        f"fidelity 0.31 [0.21, 0.43] of 64 beats base 0.12 [0.06, 0.23] of 64 "
        f"(one-sided Fisher exact p={p:.3g}, < 0.05); perplexity 210.4 < base 250.9; "
        "distinct-2 0.90 >= 0.81 (90% of the base's 0.90)"
    )
    # Higher, but not with confidence: 12 of 64 against 8 of 64.
    lucky = _evaluation("joy", {"joy": 12 / 64, NEUTRAL: 52 / 64}, {"joy": 210.4})
    promoted, reason = _verdict(promotion_decision(lucky, base))
    assert not promoted and reason.startswith("not promoted: fidelity 0.19 [")
    assert f"p={fisher_greater(12, 64, 8, 64):.3g}, >= 0.05" in reason
    assert "perplexity" not in reason  # only the failed checks are named
    perplexed = _evaluation("joy", {"joy": 20 / 64, NEUTRAL: 44 / 64}, {"joy": 260.0})
    promoted, reason = _verdict(promotion_decision(perplexed, base))
    assert not promoted
    assert reason == "not promoted: perplexity 260.0 is not below base 250.9"
    tie = _evaluation("joy", {"joy": 8 / 64, NEUTRAL: 56 / 64}, {"joy": 100.0})
    assert promotion_decision(tie, base).promoted is False  # must beat the base, not match it
    # Piling up emotion words in repetitive verse: distinct-2 more than 10% below the base's.
    babbling = _evaluation("joy", {"joy": 0.5, NEUTRAL: 0.5}, {"joy": 200.0}, distinct_2=0.8)
    promoted, reason = _verdict(promotion_decision(babbling, base))
    assert not promoted
    assert reason == "not promoted: distinct-2 0.80 < 0.81 (90% of the base's 0.90)"
    no_base_ppl = _evaluation(NEUTRAL, {"joy": 8 / 64, NEUTRAL: 56 / 64}, {NEUTRAL: 240.0})
    promoted, reason = _verdict(promotion_decision(good, no_base_ppl))
    assert not promoted and "no joy test perplexity for the base" in reason


def test_a_new_base_is_champion_only_if_no_worse_than_the_current_one():
    current = _evaluation(NEUTRAL, {NEUTRAL: 1.0}, {NEUTRAL: 100.0})
    assert _verdict(base_promotion_decision(current, None)) == (True, "the first neutral base")
    close = _evaluation(NEUTRAL, {NEUTRAL: 1.0}, {NEUTRAL: 101.9})
    promoted, reason = _verdict(base_promotion_decision(close, current))
    assert promoted and reason == "neutral perplexity 101.9 is within 2% of the champion's 100.0"
    worse = _evaluation(NEUTRAL, {NEUTRAL: 1.0}, {NEUTRAL: 102.1})
    promoted, reason = _verdict(base_promotion_decision(worse, current))
    assert not promoted
    assert reason == (
        "not promoted: neutral perplexity 102.1 is more than 2% worse than the champion's 100.0"
    )


def _verdict(decision: Decision) -> tuple[bool, str]:
    return decision.promoted, decision.text


def test_a_decision_carries_each_check_as_data_beside_its_wording():
    base = _evaluation(NEUTRAL, {"joy": 8 / 64, NEUTRAL: 56 / 64}, {"joy": 250.9, NEUTRAL: 240.0})
    lucky = _evaluation("joy", {"joy": 12 / 64, NEUTRAL: 52 / 64}, {"joy": 210.4}, distinct_2=0.8)
    decision = promotion_decision(lucky, base)
    assert [(c.name, c.passed) for c in decision.reasons] == [
        ("fidelity", False),
        ("perplexity", True),
        ("fluency", False),
    ]
    fidelity = decision.check("fidelity")
    p = fisher_greater(12, 64, 8, 64)
    assert fidelity.test == FISHER and fidelity.p_value == pytest.approx(p)
    assert (fidelity.value, fidelity.reference, fidelity.limit) == (12 / 64, 8 / 64, ALPHA)
    perplexity = decision.check("perplexity")
    assert (perplexity.value, perplexity.reference) == (210.4, 250.9)
    assert perplexity.test is None and perplexity.p_value is None
    fluency = decision.check("fluency")
    assert (fluency.value, fluency.reference) == (0.8, 0.9)
    assert fluency.limit == pytest.approx(0.81)
    # The wording the registry's tags and the cards keep: the failed checks, in order.
    assert decision.failed == (fidelity, fluency)
    assert decision.text == (
        f"not promoted: fidelity 0.19 [0.11, 0.30] of 64 does not beat base 0.12 [0.06, 0.23] "
        f"of 64 (one-sided Fisher exact p={p:.3g}, >= 0.05); "
        "distinct-2 0.80 < 0.81 (90% of the base's 0.90)"
    )
    assert gate_reasons(decision.text) == decision.text.removeprefix("not promoted: ")
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.promoted = True  # type: ignore[misc]
    with pytest.raises(KeyError):
        decision.check("novelty")


def test_a_child_of_a_base_that_is_not_champion_is_not_promoted():
    base = _evaluation(NEUTRAL, {"joy": 8 / 64, NEUTRAL: 56 / 64}, {"joy": 250.9, NEUTRAL: 240.0})
    good = _evaluation("joy", {"joy": 20 / 64, NEUTRAL: 44 / 64}, {"joy": 210.4, NEUTRAL: 300.0})
    gate = promotion_decision(good, base)
    named = {"base_name": "emoverse-neutral v2"}
    assert child_promotion_decision(good, base, **named, base_is_champion=True) == gate
    refused = child_promotion_decision(good, base, **named, base_is_champion=False)
    assert not refused.promoted
    assert refused.reasons[:3] == gate.reasons and refused.reasons[3].name == "base is champion"
    assert refused.text == (
        "not promoted: its base emoverse-neutral v2 is not the neutral champion "
        f"(passed the gate against it: {gate.text})"
    )


def test_the_conditional_model_and_the_preference_use_the_same_gate():
    base = _evaluation(NEUTRAL, {"joy": 8 / 64, NEUTRAL: 56 / 64}, {"joy": 250.9, NEUTRAL: 240.0})
    good = _evaluation("joy", {"joy": 20 / 64, NEUTRAL: 44 / 64}, {"joy": 210.4, NEUTRAL: 300.0})
    bad = _evaluation("anger", {"anger": 0.0, NEUTRAL: 1.0}, {"anger": 300.0})
    first = conditional_promotion_decision({"joy": good}, None, base_name="")
    assert _verdict(first) == (
        True,
        "the first conditional model: no neutral base to compare with",
    )
    both = conditional_promotion_decision({"joy": good, "anger": bad}, base, base_name="nb v1")
    assert _verdict(both) == (True, "passes the promotion gate against nb v1 for joy")
    assert [(c.name, c.passed) for c in both.details] == [
        ("gate for joy", True),
        ("gate for anger", False),
    ]
    assert both.details[0].p_value == pytest.approx(fisher_greater(20, 64, 8, 64))
    none = conditional_promotion_decision({"anger": bad}, base, base_name="nb v1")
    assert _verdict(none) == (
        False,
        "not promoted: passes the promotion gate against nb v1 for no emotion",
    )
    # `best`: the child in the base's place; a refusal says the child keeps the emotion.
    assert _verdict(preference_decision(good, None, child_name="emoverse-joy v1")) == (
        True,
        "no emoverse-joy v1 to compare with",
    )
    weak = _evaluation("joy", {"joy": 8 / 64, NEUTRAL: 56 / 64}, {"joy": 260.0})
    kept = preference_decision(weak, good, child_name="emoverse-joy v1")
    assert not kept.promoted and kept.text.startswith("emoverse-joy v1 kept: fidelity ")
    assert kept.check("fidelity").p_value is not None
    preferred = preference_decision(good, base, child_name="base")
    assert preferred.reasons == promotion_decision(good, base).reasons


def test_a_base_decision_names_the_champion_it_was_measured_against():
    current = _evaluation(NEUTRAL, {NEUTRAL: 1.0}, {NEUTRAL: 100.0})
    worse = _evaluation(NEUTRAL, {NEUTRAL: 1.0}, {NEUTRAL: 102.1})
    decision = base_promotion_decision(worse, current, champion_version=3)
    assert decision.text == (
        "not promoted: neutral perplexity 102.1 is more than 2% worse than the champion's "
        "100.0 (v3)"
    )
    (check,) = decision.reasons
    assert check == Check(
        "neutral perplexity",
        False,
        check.text,
        value=102.1,
        reference=100.0,
        limit=pytest.approx(102.0),
    )


def test_confusion_matrix_has_a_row_per_model_and_nine_columns():
    family = {
        "joy": _evaluation("joy", {"joy": 0.5, NEUTRAL: 0.5}, {}),
        NEUTRAL: _evaluation(NEUTRAL, {NEUTRAL: 1.0}, {}),
        "anger": _evaluation("anger", {"anger": 0.25, "fear": 0.25, NEUTRAL: 0.5}, {}),
    }
    rows, matrix = confusion_matrix(family)
    assert rows == ["anger", "joy", NEUTRAL]  # LABELS order, not insertion order
    assert all(len(row) == len(LABELS) == 9 for row in matrix)
    assert all(sum(cell.share for cell in row) == pytest.approx(1.0) for row in matrix)
    fear = matrix[0][LABELS.index("fear")]
    assert (fear.k, fear.n, fear.share) == (16, 64, 0.25)
    assert (fear.low, fear.high) == wilson_interval(16, 64)
    assert matrix[2][LABELS.index(NEUTRAL)].share == 1.0


def test_confusion_matrix_chart_is_a_png(tmp_path):
    rows, matrix = confusion_matrix(
        {
            "joy": _evaluation("joy", {"joy": 0.75, NEUTRAL: 0.25}, {}),
            NEUTRAL: _evaluation(NEUTRAL, {NEUTRAL: 1.0}, {}),
        }
    )
    shares = [[cell.share for cell in row] for row in matrix]
    out = plot_confusion_matrix(shares, rows, list(LABELS), tmp_path / "confusion.png")
    assert out == tmp_path / "confusion.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]  # no temp file left


# --- the card ---------------------------------------------------------------------------------


def test_evaluation_goes_into_the_card_once(trained, tmp_path):
    model_dir = Path(shutil.copytree(trained, tmp_path / "joy"))
    shares = {"joy": 20 / 64, NEUTRAL: 44 / 64}
    evaluation = _evaluation("joy", shares, {"joy": 210.4, NEUTRAL: None})
    base = _evaluation(NEUTRAL, {"joy": 8 / 64, NEUTRAL: 56 / 64}, {"joy": 250.0})
    evaluation = ev._with_base(evaluation, base)
    evaluation = Evaluation.from_dict({**evaluation.to_dict(), "sample_perplexity": 301.25})
    first = "not promoted: fidelity 0.06 does not beat base 0.12"
    add_evaluation_to_card(model_dir, evaluation.to_dict(), first, promoted=False)
    text = (model_dir / CARD_FILE).read_text()
    assert "- registered, not promoted: fidelity 0.06 does not beat base 0.12\n" in text
    add_evaluation_to_card(
        model_dir, evaluation.to_dict(), "fidelity 0.31 > base 0.12", promoted=True
    )
    text = (model_dir / CARD_FILE).read_text()
    assert text.count("## Evaluation") == 1 and "fidelity 0.06" not in text
    assert "&id" not in text  # no YAML anchors: plain metadata for other readers
    assert "promoted to champion: fidelity 0.31 > base 0.12" in text
    assert "joy 210.4" in text and "neutral n/a (no test poems)" in text
    # Every share with its interval and n, for both judges; the fluency guard's numbers.
    low, high = wilson_interval(20, 64)
    assert f"judged by nrc: 31.2% [{low:.1%}, {high:.1%}] of 64 of sampled poems" in text
    assert "the base's share 12.5% [" in text and "lift +18.8%" in text
    assert f"one-sided Fisher exact p={fisher_greater(20, 64, 8, 64):.3g}" in text
    assert "judged by empath: 31.2% [" in text
    assert "distinct-2 0.900 (the base's 0.900)" in text
    assert "perplexity under the neutral base 301.2" in text
    assert text.count("# emoverse-joy\n") == 1  # the card's own text is kept
    meta = read_card_metadata(model_dir)
    assert meta["emotion"] == "joy" and meta["data_fingerprint"] == "f" * 64  # kept
    assert meta["evaluation"]["fidelity"] == 0.3125 and meta["evaluation"]["lift"] == 0.1875
    assert meta["evaluation"]["judges"]["nrc"]["fidelity"] == {
        "k": 20,
        "n": 64,
        "share": 0.3125,
        "low": float(f"{low:.4g}"),
        "high": float(f"{high:.4g}"),
    }
    assert meta["evaluation"]["perplexity"] == {"joy": 210.4, NEUTRAL: None}
    assert meta["evaluation"]["promotion"] == {
        "promoted": True,
        "reason": "fidelity 0.31 > base 0.12",
    }
    assert "samples" not in meta["evaluation"]
    results = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == "emoverse-joy"
    assert results[0]["metrics"] == [
        {"type": "perplexity", "value": 210.4, "name": "joy perplexity"}
    ]
    assert {m["name"] for m in results[-1]["metrics"]} == {
        "fidelity",
        "lift over base",
        "fidelity judged by empath",
        "perplexity of its poems under the neutral base",
        "distinct-1",
        "distinct-2",
    }
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no temp file left
    yaml.safe_load(text.split("---\n", 2)[1])  # still one well-formed YAML block
    # The Hub's own parser reads the model-index as evaluation results.
    from huggingface_hub import ModelCard

    parsed = ModelCard(text).data.eval_results
    assert ("perplexity", 210.4) in {(r.metric_type, r.metric_value) for r in parsed}
