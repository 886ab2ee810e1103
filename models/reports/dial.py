"""Measuring the dial: what an emotion's strength does to its poems.

At each strength S of an emotion (base + S * (child - base), models/generation/blend.py) K poems are
sampled from a fixed seed and measured as a child is (models/evaluation/evaluate.py): fidelity
under both
judges with 95% Wilson intervals, and the fluency guard, the poems' perplexity under the base
and their distinct-2. `fluent_up_to` says where fluency breaks; `plot_dial` draws one emotion.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emoverse.emotions import EMOTIONS
from emoverse.errors import EmoverseError
from emoverse.report import pyplot
from emoverse.stats import Share
from models.evaluation.promotion import MAX_DISTINCT_2_DROP
from models.generation.blend import RecordSource, materialize, resolve_recipe
from models.records import JUDGES

DIAL_STRENGTHS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
# Fluency breaks at a strength whose poems are this many times less likely under the base
# than the child's own (strength 1), or whose distinct-2 is more than MAX_DISTINCT_2_DROP
# below the base's (strength 0): the promotion gate's guard.
PERPLEXITY_BREAK = 2.0


@dataclass(frozen=True)
class DialPoint:
    emotion: str
    strength: float
    model: str  # the recipe, naming every version and weight
    n: int  # poems sampled
    fidelity: dict[str, dict[str, Any]]  # judge -> Share.to_dict()
    sample_perplexity: float | None  # the poems under the base
    distinct_2: float

    def share(self, judge: str) -> Share:
        return Share(**self.fidelity[judge])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_dial(
    source: RecordSource,
    emotion: str,
    partitions_dir: Path,
    blends_dir: Path,
    *,
    strengths: Sequence[float] = DIAL_STRENGTHS,
    samples: int = 32,
    seed: int = 0,
    max_new_tokens: int = 80,
) -> list[DialPoint]:
    """The emotion's dial at each of `strengths` (K = `samples` poems each, from `seed`)."""
    # torch loads only when a dial is measured: the family report imports this module in flows.
    from emoverse.tagging import label_texts
    from models.evaluation.evaluate import _tag_rule, distinct_n, score_perplexity
    from models.folders.model_folder import load_model
    from models.generation.generate import GenerationRequest, PoemGenerator

    if emotion not in EMOTIONS:
        raise EmoverseError(f"the dial turns one of the eight emotions, not {emotion!r}")
    rule = _tag_rule(Path(partitions_dir))
    request = GenerationRequest(n=samples, seed=seed, max_new_tokens=max_new_tokens)
    judge_model = None
    points = []
    for strength in strengths:
        recipe = resolve_recipe(source, {emotion: strength})
        if judge_model is None:
            judge_model = load_model(recipe.base.path)
        poems = PoemGenerator(materialize(recipe, blends_dir)).generate(request)
        fidelity = {}
        for judge in JUDGES:
            labels = label_texts(poems, **rule, lexicon=judge)
            fidelity[judge] = Share.of(labels.count(emotion), len(poems)).to_dict()
        ppl = score_perplexity(*judge_model, poems)
        points.append(
            DialPoint(
                emotion=emotion,
                strength=float(strength),
                model=recipe.describe(),
                n=len(poems),
                fidelity=fidelity,
                sample_perplexity=None if math.isnan(ppl) else ppl,
                distinct_2=distinct_n(poems, 2),
            )
        )
    return points


def breaks(points: Sequence[DialPoint]) -> dict[float, str]:
    """strength -> why fluency is broken there (points measured without strengths 0 and 1
    have no reference, and nothing is said of them)."""
    by_strength = {p.strength: p for p in points}
    base, child = by_strength.get(0.0), by_strength.get(1.0)
    found = {}
    for p in points:
        why = []
        limit = None
        if child and child.sample_perplexity:
            limit = PERPLEXITY_BREAK * child.sample_perplexity
        if limit is not None and p.sample_perplexity and p.sample_perplexity > limit:
            why.append(
                f"perplexity under the base {p.sample_perplexity:.0f} > "
                f"{PERPLEXITY_BREAK:g}x the child's {child.sample_perplexity:.0f}"
            )
        if base and p.distinct_2 < (1 - MAX_DISTINCT_2_DROP) * base.distinct_2:
            why.append(
                f"distinct-2 {p.distinct_2:.2f} < {1 - MAX_DISTINCT_2_DROP:.0%} of the base's "
                f"{base.distinct_2:.2f}"
            )
        if why:
            found[p.strength] = "; ".join(why)
    return found


def fluent_up_to(points: Sequence[DialPoint]) -> float:
    """The highest measured strength below the first break (every measured one if none)."""
    broken = breaks(points)
    fluent = 0.0
    for p in sorted(points, key=lambda p: p.strength):
        if p.strength in broken:
            break
        fluent = p.strength
    return fluent


def dial_table(points: Sequence[DialPoint]) -> list[str]:
    """A markdown table of one emotion's dial."""
    broken = breaks(points)
    lines = [
        "| strength | fidelity (NRC) | fidelity (Empath) | poems' ppl under base | distinct-2 "
        "| fluency |",
        "|---:|---|---|---:|---:|---|",
    ]
    for p in points:
        ppl = "n/a" if p.sample_perplexity is None else f"{p.sample_perplexity:,.0f}"
        cells = [_share(p.share(j)) for j in JUDGES]
        fluency = f"breaks: {broken[p.strength]}" if p.strength in broken else "ok"
        lines.append(
            f"| {p.strength:g} | {cells[0]} | {cells[1]} | {ppl} | {p.distinct_2:.2f} "
            f"| {fluency} |"
        )
    return lines


def _share(share: Share) -> str:
    return f"{share.share:.0%} [{share.low:.0%}–{share.high:.0%}] n={share.n}"


def plot_dial(points: Sequence[DialPoint], path: Path) -> Path:
    """Fidelity under both judges (with intervals) above, fluency below, against strength."""
    plt = pyplot()
    xs = [p.strength for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 5.2), dpi=100, sharex=True)
    for judge, color in zip(JUDGES, ("#3b6db3", "#c0632b"), strict=True):
        shares = [p.share(judge) for p in points]
        top.errorbar(
            xs,
            [s.share for s in shares],
            yerr=[[s.share - s.low for s in shares], [s.high - s.share for s in shares]],
            fmt="o-",
            color=color,
            capsize=2,
            markersize=4,
            label=f"fidelity ({judge})",
        )
    top.set_ylim(0, 1)
    top.set_ylabel("share of poems")
    top.grid(alpha=0.3)
    top.legend(fontsize=7)
    top.set_title(f"{points[0].emotion}: base + S × (child − base)" if points else "")
    ppl = [p.sample_perplexity or math.nan for p in points]
    bottom.plot(xs, ppl, "s-", color="#555555", label="poems' perplexity under the base")
    bottom.set_yscale("log")
    bottom.set_ylabel("perplexity under base")
    bottom.set_xlabel("strength S (0: base, 1: child)")
    twin = bottom.twinx()
    twin.plot(xs, [p.distinct_2 for p in points], "^--", color="#2a9d4b", label="distinct-2")
    twin.set_ylim(0, 1)
    twin.set_ylabel("distinct-2")
    for strength in breaks(points):
        bottom.axvline(strength, color="#b00020", alpha=0.25, linewidth=6)
    handles = bottom.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    bottom.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper left")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
