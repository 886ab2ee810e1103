"""The family report: does each child carry its emotion? One markdown page with figures, for a
person to judge in a minute.

Per emotion it shows the model each emotion uses now (champion, else newest) against the base
it was trained from: fidelity under both judges with 95% intervals beside the base's share,
lift and the one-sided p-value, human accuracy where readers have judged, perplexities,
distinct-n, the loss curve and three sample poems; then the 9x9 confusion matrices, and how
often the two judges agree on real poems (the ceiling for the Empath figures). Asked for
(`emoverse report --dial`), a section on the dial: each emotion at strengths 0 to 3
(models/reports/dial.py), one plot and one table per emotion, and where fluency breaks.
"""

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoverse.emotions import CONDITIONAL, EMOTIONS, LABELS, NEUTRAL, model_name
from emoverse.errors import EmoverseError
from emoverse.judgements import JudgementStore
from emoverse.report import plot_confusion_matrix, pyplot
from emoverse.stats import Share
from emoverse.tagging import judge_agreement, read_partition
from models.evaluation.promotion import ALPHA
from models.folders.card import LOSS_PLOT_FILE
from models.records import EVALUATION_FILE, JUDGES, Evaluation, confusion_matrix
from models.registry.model_registry import ModelRecord, ModelRegistry
from models.reports.dial import (
    DIAL_STRENGTHS,
    DialPoint,
    breaks,
    dial_table,
    fluent_up_to,
    measure_dial,
    plot_dial,
)

REPORT_FILE = "report.md"
SAMPLE_POEMS = 3


@dataclass(frozen=True)
class FamilyMember:
    record: ModelRecord
    evaluation: Evaluation
    samples: list[str]
    human: Share | None


def collect_family(registry: ModelRegistry, judgements: JudgementStore) -> dict[str, FamilyMember]:
    """The model each label uses now, with its evaluation, samples and human accuracy."""
    human = judgements.accuracy()
    family: dict[str, FamilyMember] = {}
    for label in LABELS:
        if not registry.list(label):
            continue
        record, _ = registry.current(label)
        evaluation = record.evaluation
        if evaluation is None:
            continue
        samples: list[str] = []
        evaluation_file = Path(record.path) / EVALUATION_FILE
        if evaluation_file.is_file():
            samples = json.loads(evaluation_file.read_text())["evaluation"].get("samples", [])
        family[label] = FamilyMember(
            record,
            evaluation,
            samples[:SAMPLE_POEMS],
            human.get((label, record.version)),
        )
    return family


def verdict(evaluation: Evaluation) -> str:
    """One plain sentence: does the child carry its emotion, and by which judges."""
    passed = [
        judge
        for judge in JUDGES
        if (p := evaluation.judges.get(judge, {}).get("p_value")) is not None and p < ALPHA
    ]
    if not any(evaluation.judges.get(j, {}).get("base") for j in JUDGES):
        return "no base to compare with"
    if passed == list(JUDGES):
        return "carries its emotion: both judges find it more often than in the base's poems"
    if passed == ["nrc"]:
        return (
            "carries its emotion by the lexicon it was trained on; the independent judge "
            "(Empath) does not confirm it"
        )
    if passed:
        return "only the independent judge finds more of its emotion than in the base's poems"
    return "no evidence that it carries its emotion more than the base does"


def _cell(share: dict[str, Any] | Share | None) -> str:
    if share is None:
        return "n/a"
    if isinstance(share, dict):
        share = Share(**share)
    return f"{share.share:.0%} [{share.low:.0%}–{share.high:.0%}] n={share.n}"


def _ppl(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def plot_fidelity(family: dict[str, FamilyMember], path: Path) -> Path:
    """Per emotion, each judge's fidelity with its interval beside the base's share."""
    plt = pyplot()
    emotions = [e for e in EMOTIONS if e in family]
    series: list[tuple[str, str, list[Share | None]]] = []
    for judge, color in zip(JUDGES, ("#3b6db3", "#c0632b"), strict=True):
        own = [Share(**family[e].evaluation.judges[judge]["fidelity"]) for e in emotions]
        base = [
            Share(**b) if (b := family[e].evaluation.judges[judge].get("base")) else None
            for e in emotions
        ]
        series += [(f"{judge}: child", color, own), (f"{judge}: base", color + "80", base)]
    humans = [family[e].human for e in emotions]
    if any(humans):
        series.append(("human readers", "#2a9d4b", humans))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * max(1, len(emotions)), 3.8), dpi=100)
    width = 0.8 / len(series)
    for i, (name, color, shares) in enumerate(series):
        xs = [j - 0.4 + width * (i + 0.5) for j, s in enumerate(shares) if s is not None]
        got = [s for s in shares if s is not None]
        if not got:
            continue
        ax.errorbar(
            xs,
            [s.share for s in got],
            yerr=[[s.share - s.low for s in got], [s.high - s.share for s in got]],
            fmt="o" if "base" not in name else "s",
            color=color,
            alpha=0.55 if "base" in name else 1.0,
            capsize=2,
            markersize=4,
            label=name,
        )
    ax.set_xticks(range(len(emotions)), emotions, rotation=30, ha="right")
    ax.set_ylabel("share of sampled poems with the emotion")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Fidelity with 95% intervals: each child against its base")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _agreement(partitions_dir: Path) -> dict[str, Any] | None:
    texts, labels = [], []
    for label in LABELS:
        table = read_partition(partitions_dir, label).select(["text", "label"])
        texts += table.column("text").to_pylist()
        labels += table.column("label").to_pylist()
    return judge_agreement(texts, labels) if texts else None


def measure_family_dial(
    registry: ModelRegistry,
    partitions_dir: Path,
    blends_dir: Path,
    *,
    emotions: Sequence[str] | None = None,
    strengths: Sequence[float] = DIAL_STRENGTHS,
    samples: int = 32,
    seed: int = 0,
) -> tuple[dict[str, list[DialPoint]], dict[str, str]]:
    """(emotion -> its dial, emotion -> why it has none) for `emotions` (default: every
    emotion with a model). K = `samples` poems per strength: 6 strengths cost 6K poems."""
    dials: dict[str, list[DialPoint]] = {}
    skipped: dict[str, str] = {}
    for emotion in emotions or [e for e in EMOTIONS if registry.list(e)]:
        try:
            dials[emotion] = measure_dial(
                registry, emotion, partitions_dir, blends_dir,
                strengths=strengths, samples=samples, seed=seed,
            )  # fmt: skip
        except EmoverseError as exc:  # no model, or no base to dial it from
            skipped[emotion] = str(exc)
    return dials, skipped


def _dial_section(
    dials: Mapping[str, Sequence[DialPoint]], skipped: Mapping[str, str], out_dir: Path
) -> list[str]:
    lines = [
        "## The dial: base + S × (child − base)",
        "",
        "Each emotion at strength S from 0 (the base it was trained from) through 1 (its own "
        "model) to 3, merged in weights (models/generation/blend.py). Fidelity under both judges "
        "with 95% "
        "intervals; fluency as the poems' perplexity under the base and their distinct-2. "
        "Fluency breaks where the poems are more than twice as surprising to the base as the "
        "child's own, or distinct-2 falls more than 10% below the base's.",
        "",
    ]
    for emotion, points in dials.items():
        if not points:
            continue
        plot_dial(points, out_dir / f"dial-{emotion}.png")
        broken = breaks(points)
        where = (
            f"fluency breaks at strength {min(broken):g}; fluent up to {fluent_up_to(points):g}"
            if broken
            else f"fluent at every measured strength (up to {max(p.strength for p in points):g})"
        )
        lines += [
            f"### {emotion}",
            "",
            f"{points[0].model.split(' + ')[0]} and {model_name(emotion)}: {where}.",
            "",
            f"![the {emotion} dial](dial-{emotion}.png)",
            "",
            *dial_table(points),
            "",
        ]
    for emotion, reason in skipped.items():
        lines += [f"- {emotion}: no dial ({reason})"]
    if skipped:
        lines.append("")
    return lines


def write_family_report(
    registry: ModelRegistry,
    judgements: JudgementStore,
    partitions_dir: Path,
    out_dir: Path,
    *,
    dial: Mapping[str, Sequence[DialPoint]] | None = None,
    dial_skipped: Mapping[str, str] | None = None,
) -> Path:
    """Write `out_dir/report.md` and its figures; returns the markdown file. With `dial`
    (`measure_family_dial`'s), a section on the dial."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    family = collect_family(registry, judgements)
    children = {e: m for e, m in family.items() if e != NEUTRAL}
    lines = ["# emoverse: does each child carry its emotion?", ""]
    if not family:
        lines += ["No evaluated model in the registry yet: run `emoverse run` first.", ""]
        if dial is not None:
            lines += _dial_section(dial, dial_skipped or {}, out_dir)
        (out_dir / REPORT_FILE).write_text("\n".join(lines))
        return out_dir / REPORT_FILE
    base = family.get(NEUTRAL)
    if base is not None:
        lines += [
            f"Base: emoverse-neutral v{base.record.version}. Each child below is compared with "
            "the base it was trained from, on the same number of poems sampled from the same "
            f"seed. A share is given with its 95% Wilson interval and n; p is Fisher's exact "
            f"one-sided test that the child's share beats the base's (the promotion gate asks "
            f"p < {ALPHA} under the NRC judge).",
            "",
        ]
    lines += [
        "| emotion | model | verdict | fidelity (NRC) | base (NRC) | p | fidelity (Empath) "
        "| base (Empath) | p | human | own ppl | base ppl | poems' ppl under base "
        "| distinct-2 (base) |",
        "|---|---|---|---|---|---:|---|---|---:|---|---:|---:|---:|---|",
    ]
    for emotion, member in children.items():
        ev, rec = member.evaluation, member.record
        nrc, emp = ev.judges.get("nrc", {}), ev.judges.get("empath", {})
        base_ppl = base.evaluation.perplexity.get(emotion) if base else None
        alias = "champion" if "champion" in rec.aliases else "newest, not champion"
        lines.append(
            f"| {emotion} | v{rec.version} ({alias}) | {verdict(ev)} "
            f"| {_cell(nrc.get('fidelity'))} | {_cell(nrc.get('base'))} "
            f"| {_p(nrc.get('p_value'))} | {_cell(emp.get('fidelity'))} "
            f"| {_cell(emp.get('base'))} | {_p(emp.get('p_value'))} | {_cell(member.human)} "
            f"| {_ppl(ev.perplexity.get(emotion))} | {_ppl(base_ppl)} "
            f"| {_ppl(ev.sample_perplexity)} "
            f"| {ev.distinct_2:.2f} ({_d2(ev.base_distinct_2)}) |"
        )
    missing = [e for e in EMOTIONS if e not in children]
    if missing:
        lines += ["", f"No evaluated model for: {', '.join(missing)}."]
    lines += [
        "",
        "Blank cells: `n/a` means there was nothing to measure (no test poems for a "
        "perplexity, no reader answers yet for human accuracy).",
        "",
        "The promotion gate's reason for each model:",
        "",
        *(f"- {label} v{m.record.version}: {m.record.promotion}" for label, m in family.items()),
        "",
    ]
    lines += conditional_section(registry, family)

    if children:
        plot_fidelity(family, out_dir / "fidelity.png")
        lines += ["## Fidelity", "", "![fidelity per emotion](fidelity.png)", ""]
    for judge in JUDGES:
        rows, matrix = confusion_matrix({e: m.evaluation for e, m in family.items()}, judge)
        shares = [[cell.share for cell in row] for row in matrix]
        plot_confusion_matrix(shares, rows, list(LABELS), out_dir / f"confusion-{judge}.png")
        lines += [
            f"## Confusion matrix judged by {judge}",
            "",
            f"Rows: models; columns: the label {judge} gives their poems "
            f"(n={next(iter(family.values())).evaluation.n_samples} poems per model).",
            "",
            f"![confusion matrix, {judge}](confusion-{judge}.png)",
            "",
        ]
    agreement = _agreement(partitions_dir)
    if agreement:
        lines += [
            "## How far to trust the independent judge",
            "",
            f"On the {agreement['poems']:,} real poems of the partitions, Empath gives the NRC "
            f"label to {agreement['agreement']:.0%} (Cohen's kappa {agreement['kappa']:.2f}), "
            f"and to {agreement['agreement_on_emotional']:.0%} of the poems NRC gives an "
            "emotion. A child whose poems were exactly like its partition's would reach about "
            "that under Empath, not 100%:",
            "",
            "| NRC label | real poems | Empath agrees |",
            "|---|---:|---:|",
        ]
        for label in LABELS:
            row = agreement["per_label"][label]
            share = row["empath_agrees"] / row["poems"] if row["poems"] else 0.0
            lines.append(f"| {label} | {row['poems']:,} | {share:.0%} |")
        lines.append("")
    lines += ["## Perplexity", "", "| model | " + " | ".join(LABELS) + " |"]
    lines.append("|---|" + "---:|" * len(LABELS))
    for label, member in family.items():
        ppl = member.evaluation.perplexity
        lines.append(f"| {label} | " + " | ".join(_ppl(ppl.get(lb)) for lb in LABELS) + " |")
    lines += ["", "Own-emotion test split for children, all nine for the base.", ""]
    if dial is not None:
        lines += _dial_section(dial, dial_skipped or {}, out_dir)
    lines += ["## Loss curves and sample poems", ""]
    for label, member in family.items():
        lines += [f"### {label} (v{member.record.version})", ""]
        loss = Path(member.record.path) / LOSS_PLOT_FILE
        if loss.is_file():
            shutil.copyfile(loss, out_dir / f"loss-{label}.png")
            lines += [f"![{label} loss curve](loss-{label}.png)", ""]
        for poem in member.samples:
            lines += ["\n".join(f"> {ln}" if ln.strip() else ">" for ln in poem.splitlines()), ""]
    report = out_dir / REPORT_FILE
    tmp = report.with_name(f".{REPORT_FILE}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(report)
    return report


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def _d2(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def conditional_section(registry: ModelRegistry, family: Mapping[str, FamilyMember]) -> list[str]:
    """The conditional model beside each child: fidelity (NRC), lift over the base, own-emotion
    test perplexity, distinct-2, which of the two the registry prefers and why, and what each
    cost to train. Empty without a conditional model."""
    if not registry.list(CONDITIONAL):
        return []
    preferences = {e: p for e in EMOTIONS if (p := registry.preferred(e)) is not None}
    champion, _ = registry.current(CONDITIONAL)
    # The version the preferences were recorded against (the newest trained), which need not
    # be the champion: its figures are the ones the preferences speak of.
    compared = {p.get("conditional_version") for p in preferences.values()} - {None}
    record = (
        registry.get(CONDITIONAL, version=int(compared.pop())) if len(compared) == 1 else champion
    )
    evaluations = {
        e: Evaluation.from_dict(d) for e, d in record.metrics.get("evaluations", {}).items()
    }
    title = f"## The conditional model: {model_name(CONDITIONAL)} v{record.version}"
    if record.version != champion.version:
        title += f" (compared with the children; `--model conditional` uses v{champion.version})"
    lines = [
        title,
        "",
        "One model for every emotion, told which by a control token before the poem, trained "
        f"on every partition ({record.metrics.get('balance', 'plain')} balance); evaluated as "
        "each emotion's model exactly as its child is. Preferred: the model `--model best` "
        "uses, by the promotion rule (the conditional model must beat the child).",
        "",
        "| emotion | model | fidelity (NRC) | lift over base | own ppl | distinct-2 | preferred |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for emotion in EMOTIONS:
        preferred = preferences.get(emotion, {})
        child = family.get(emotion)
        rows = [("family", child.record.version, child.evaluation)] if child else []
        if emotion in evaluations:
            rows.append(("conditional", record.version, evaluations[emotion]))
        for kind, version, ev in rows:
            name = f"{'child' if kind == 'family' else kind} v{version}"
            chosen = preferred.get("model") == kind and preferred.get("version") == version
            lift = ev.judges.get("nrc", {}).get("lift")
            lines.append(
                f"| {emotion} | {name} | {_cell(ev.judges.get('nrc', {}).get('fidelity'))} "
                f"| {'n/a' if lift is None else f'{lift:+.0%}'} "
                f"| {_ppl(ev.perplexity.get(emotion))} | {ev.distinct_2:.2f} "
                f"| {'**yes**' if chosen else ''} |"
            )
    lines += ["", "Why each emotion prefers its model:", ""]
    reasons = {e: p["reason"] for e, p in preferences.items()}
    lines += [f"- {e}: {reason}" for e, reason in reasons.items()]
    family_cost = [m.record.metrics for m in family.values()]
    lines += [
        "",
        "Training cost (optimizer steps, tokens seen, seconds):",
        "",
        "| model | steps | tokens | seconds |",
        "|---|---:|---:|---:|",
        _cost_row(f"family: base and {len(family) - (NEUTRAL in family)} children", family_cost),
        _cost_row(f"conditional v{record.version}", [record.metrics]),
        "",
    ]
    return lines


def _cost_row(name: str, metrics: Sequence[Mapping[str, Any]]) -> str:
    """One row of training cost summed over `metrics` (training records); the tokens seen are
    steps x batch x block, which the loop's throughput times its seconds gives back."""

    def total(key: str) -> float:
        return sum(float(m.get(key) or 0) for m in metrics)

    seen = sum(
        float(m.get("tokens_per_second") or 0) * float(m.get("seconds") or 0) for m in metrics
    )
    return f"| {name} | {total('steps'):,.0f} | {seen:,.0f} | {total('seconds'):,.1f} |"
