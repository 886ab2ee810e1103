"""The promotion rule, in one place: which model becomes champion, and which of two models
writes an emotion better. Every decision takes evaluations and returns a `Decision`: promoted
or not, and each check it made as data (its name, whether it passed, its numbers and, for the
statistical test, the test's name and p-value). `Decision.text` is the sentence the registry's
`promotion` tag, the model card and the CLI show; stored tags keep that wording.

- `promotion_decision`: a child against the neutral base (the gate).
- `child_promotion_decision`: the gate, and the base must be the neutral champion.
- `conditional_promotion_decision`: the conditional model against the base, emotion by emotion.
- `preference_decision`: the conditional model against an emotion's child (`best`).
- `base_promotion_decision` and friends: a new neutral base against the champion.

Torch-free, like the records it reads: the flows import it."""

from collections.abc import Mapping
from dataclasses import dataclass

from emoverse.emotions import NEUTRAL
from emoverse.stats import Share, fisher_greater
from models.records import GATE_JUDGE, Evaluation

ALPHA = 0.05  # the gate's one-sided significance level
MAX_DISTINCT_2_DROP = 0.10  # a child whose distinct-2 is >10% below the base's is refused
# A new base may be this much worse in neutral test perplexity than the champion and still
# replace it. Reseeding alone moved it by 0.3-0.4% on bench/quality.py's 112 neutral test poems
# (bench/RESULTS.md); 2% leaves room for the demo run's ten times smaller test split.
BASE_PERPLEXITY_MARGIN = 0.02
# How a refused model's reason starts (the registry's `promotion` tag, the card, the CLI), once:
# whoever quotes a reason inside a sentence of its own takes it off (`gate_reasons`).
NOT_PROMOTED = "not promoted: "
FISHER = "one-sided Fisher exact"


@dataclass(frozen=True)
class Check:
    """One thing a decision looked at. `value` is the candidate's number, `reference` what it
    was compared with, `limit` the bound it had to clear where that is neither (the test's
    significance level, the fluency floor, the perplexity allowed); `test` and `p_value` name
    the statistical test where one decided."""

    name: str
    passed: bool
    text: str  # how the check reads in a reason
    value: float | None = None
    reference: float | None = None
    limit: float | None = None
    test: str | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Decision:
    """Whether the candidate wins, and every check made on the way."""

    promoted: bool
    reasons: tuple[Check, ...]
    refused: str = NOT_PROMOTED  # how a refusal starts; the failed checks follow
    # The checks behind a decision summarised by one check (the conditional model's gate per
    # emotion): data beside the reasons, not in the text.
    details: tuple[Check, ...] = ()

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(check for check in self.reasons if not check.passed)

    @property
    def text(self) -> str:
        """Every check when promoted; the verdict and the failed checks otherwise."""
        if self.promoted:
            return "; ".join(check.text for check in self.reasons)
        return self.refused + "; ".join(check.text for check in self.failed)

    def check(self, name: str) -> Check:
        """The check called `name` (KeyError if this decision made none)."""
        for check in self.reasons:
            if check.name == name:
                return check
        raise KeyError(name)


def _accepted(name: str, text: str) -> Decision:
    """A decision with nothing to weigh: promoted, saying why."""
    return Decision(True, (Check(name, True, text),))


def gate_reasons(promotion: str) -> str:
    """A stored promotion reason without its verdict ("not promoted: "), to quote in a
    sentence that already says so."""
    return promotion.removeprefix(NOT_PROMOTED)


def promotion_decision(
    child: Evaluation, base: Evaluation, *, against: str = "base", candidate: str = "child"
) -> Decision:
    """A child becomes champion only if
    1. `fidelity`: its fidelity beats the base's share for its emotion with confidence:
       Fisher's exact one-sided test at ALPHA, under the gate's judge (the partitions' lexicon);
    2. `perplexity`: its perplexity on its emotion's test poems is below the base's;
    3. `fluency`: its distinct-2 is no more than MAX_DISTINCT_2_DROP below the base's.
    The reasons name the model compared with as `against` and the one judged as `candidate`."""
    emotion = child.emotion
    if child.n_samples == 0 or base.n_samples == 0:  # records from before intervals
        mine, theirs = Share.of(0, 0), Share.of(0, 0)
    else:
        mine, theirs = child.fidelity_of(GATE_JUDGE), base.share(emotion, GATE_JUDGE)
    p = fisher_greater(mine.k, mine.n, theirs.k, theirs.n)
    fidelity_ok = mine.n > 0 and theirs.n > 0 and p < ALPHA
    fidelity = Check(
        "fidelity",
        fidelity_ok,
        f"fidelity {mine} {'beats' if fidelity_ok else 'does not beat'} {against} {theirs} "
        f"({FISHER} p={p:.3g}, {'<' if fidelity_ok else '>='} {ALPHA})",
        value=mine.share,
        reference=theirs.share,
        limit=ALPHA,
        test=FISHER,
        p_value=p,
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
    perplexity = Check("perplexity", ppl_ok, ppl_text, value=child_ppl, reference=base_ppl)
    floor = (1 - MAX_DISTINCT_2_DROP) * base.distinct_2
    fluent = child.distinct_2 >= floor
    fluency = Check(
        "fluency",
        fluent,
        f"distinct-2 {child.distinct_2:.2f} {'>=' if fluent else '<'} {floor:.2f} "
        f"({1 - MAX_DISTINCT_2_DROP:.0%} of the {against}'s {base.distinct_2:.2f})",
        value=child.distinct_2,
        reference=base.distinct_2,
        limit=floor,
    )
    checks = (fidelity, perplexity, fluency)
    return Decision(all(check.passed for check in checks), checks)


def child_promotion_decision(
    child: Evaluation, base: Evaluation, *, base_name: str, base_is_champion: bool
) -> Decision:
    """The gate against the base, and the base must be the neutral champion (a family is one
    base and its children): a child that passes against another base is not promoted."""
    gate = promotion_decision(child, base)
    if not gate.promoted or base_is_champion:
        return gate
    not_champion = Check(
        "base is champion",
        False,
        f"its base {base_name} is not the neutral champion "
        f"(passed the gate against it: {gate.text})",
    )
    return Decision(False, (*gate.reasons, not_champion))


def conditional_promotion_decision(
    evaluations: Mapping[str, Evaluation], base: Evaluation | None, *, base_name: str
) -> Decision:
    """The conditional model becomes champion if it passes the gate against the base for at
    least one emotion (each emotion's gate is one check, its p-value the fidelity test's)."""
    if base is None:
        return _accepted("no base", "the first conditional model: no neutral base to compare with")
    gates = {emotion: promotion_decision(e, base) for emotion, e in evaluations.items()}
    passed = [emotion for emotion, gate in gates.items() if gate.promoted]
    summary = Check(
        "gate per emotion",
        bool(passed),
        f"passes the promotion gate against {base_name} for {', '.join(passed) or 'no emotion'}",
        value=len(passed),
        limit=1,
    )
    per_emotion = tuple(
        Check(
            f"gate for {emotion}",
            gate.promoted,
            f"{emotion}: {gate.text}",
            test=FISHER,
            p_value=gate.check("fidelity").p_value,
        )
        for emotion, gate in gates.items()
    )
    return Decision(bool(passed), (summary,), details=per_emotion)


def preference_decision(
    conditional: Evaluation, child: Evaluation | None, *, child_name: str = "child"
) -> Decision:
    """Whether the conditional model is preferred for one emotion: it must beat the emotion's
    child by the promotion rule, the child in the base's place (fidelity by Fisher's test,
    own-emotion perplexity, distinct-2); the child, the incumbent, keeps the emotion
    otherwise. Without a child to compare with, the conditional model is preferred."""
    if child is None:
        return _accepted("no child", f"no {child_name} to compare with")
    gate = promotion_decision(conditional, child, against=child_name, candidate="conditional model")
    return Decision(gate.promoted, gate.reasons, refused=f"{child_name} kept: ")


def base_promotion_decision(
    new: Evaluation,
    champion: Evaluation | None,
    *,
    champion_version: int | None = None,
    margin: float = BASE_PERPLEXITY_MARGIN,
) -> Decision:
    """A new neutral base becomes champion unless its perplexity on the neutral test split is
    more than `margin` worse than the current champion's on the same poems; the champion's
    version, where given, ends the reason."""
    if champion is None:
        return _accepted("first base", "the first neutral base")
    which = f" (v{champion_version})" if champion_version is not None else ""
    new_ppl, old_ppl = new.perplexity.get(NEUTRAL), champion.perplexity.get(NEUTRAL)
    if new_ppl is None or old_ppl is None:
        return _accepted(
            "neutral perplexity", f"no neutral test poems to compare the bases on{which}"
        )
    limit = old_ppl * (1 + margin)
    ok = new_ppl <= limit
    text = (
        f"neutral perplexity {new_ppl:.1f} is within {margin:.0%} of the champion's {old_ppl:.1f}"
        if ok
        else f"neutral perplexity {new_ppl:.1f} is more than {margin:.0%} worse than "
        f"the champion's {old_ppl:.1f}"
    )
    check = Check(
        "neutral perplexity", ok, text + which, value=new_ppl, reference=old_ppl, limit=limit
    )
    return Decision(ok, (check,))


def base_retrained_unchanged(champion_promotion: str) -> Decision:
    """The new base is the champion's own folder (nothing changed): it stays champion, for
    the reason it became one."""
    return _accepted("unchanged", champion_promotion or "the neutral champion, retrained unchanged")


def champion_folder_gone(champion_version: int) -> Decision:
    """The champion's folder is gone: the new base has nothing to be compared with."""
    return _accepted("champion folder", f"the champion v{champion_version}'s folder is gone")
