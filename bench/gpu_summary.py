"""The GPU run's summary step (bench/gpu_run.py): the JSON the other steps left in the work
folder, turned into what comes back from the device, in OUT:

    RESULTS.md          for the top of the repo: partitions, training and loss curves, fidelity
                        and lift per emotion under every judge with intervals, the gate and the
                        fluency guard, family against conditional, three poems per emotion
    bench-RESULTS.md    the throughput section for bench/RESULTS.md
    results.json        every figure the steps recorded
    gpu-results.tar.gz  unpacked at the repo's root: bench/gpu-results/ (the figures RESULTS.md
                        shows, each step's log, the profiler's summary and trace)

A step that did not finish leaves a gap that the summary names; it never stops the summary.
"""

import dataclasses
import datetime as dt
import json
import math
import tarfile
from pathlib import Path
from typing import Any

FIGURES = "bench/gpu-results"
SAMPLE_POEMS = 3
MAX_TRACE_BYTES = 12 * 2**20  # one returned file may hold 16 MiB, the tarball with the rest


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _share(share: dict[str, Any] | None) -> str:
    if not share:
        return "n/a"
    return f"{share['share']:.0%} [{share['low']:.0%}, {share['high']:.0%}]"


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def _quote(poem: str) -> str:
    return "\n".join(f"> {line}" if line.strip() else ">" for line in poem.splitlines())


def _figures(work: Path, family: dict, conditional: dict) -> list[Path]:
    """Loss curves and the confusion matrix of each judge, for the family and the conditional
    model, beside the label chart the corpus step drew."""
    from emoverse.report import plot_confusion_matrix, plot_loss_curves
    from models.folders.card import HISTORY_FILE
    from models.records import Evaluation, confusion_matrix

    figures = work / "figures"
    figures.mkdir(parents=True, exist_ok=True)

    def history(path: str | None) -> dict | None:
        file = Path(path or "") / HISTORY_FILE
        return json.loads(file.read_text()) if path and file.is_file() else None

    from emoverse.emotions import NEUTRAL

    histories = {
        name: h
        for name, path in [
            ("foundation", (family.get("foundation") or {}).get("path")),
            *((e, m.get("path")) for e, m in family.get("models", {}).items()),
        ]
        if (h := history(path)) is not None
    }
    # Two panels: ten curves on one would hide each other behind the legend.
    base = {k: v for k, v in histories.items() if k in ("foundation", NEUTRAL)}
    children = {k: v for k, v in histories.items() if k not in base}
    if base:
        plot_loss_curves(base, figures / "loss-base.png")
    if children:
        plot_loss_curves(children, figures / "loss-children.png")
    if (h := history(conditional.get("path"))) is not None:
        plot_loss_curves({"conditional": h}, figures / "loss-conditional.png")

    from emoverse.emotions import LABELS

    for name, evaluations in (
        (
            "family",
            {e: m["evaluation"] for e, m in family.get("models", {}).items() if "evaluation" in m},
        ),
        ("conditional", {e: m["evaluation"] for e, m in conditional.get("emotions", {}).items()}),
    ):
        if not evaluations:
            continue
        parsed = {e: Evaluation.from_dict(v) for e, v in evaluations.items()}
        for judge in next(iter(parsed.values())).label_counts:
            rows, matrix = confusion_matrix(parsed, judge)
            plot_confusion_matrix(
                [[cell.share for cell in row] for row in matrix],
                rows,
                list(LABELS),
                figures / f"confusion-{name}-{judge}.png",
            )
    return sorted(figures.glob("*.png"))


def _steps_table(run: dict) -> list[str]:
    lines = ["| step | limit (s) | took (s) | outcome |", "|---|---:|---:|---|"]
    for step, o in run.get("steps", {}).items():
        outcome = "killed at its limit" if o["timed_out"] else f"exit {o['rc']}"
        lines.append(f"| {step} | {o['limit']} | {o['seconds']} | {outcome} |")
    lines.append("| summary | | | this file |")
    return lines


def _throughput_lines(tp: dict, heading: str) -> list[str]:
    if not tp:
        return [heading, "", "The throughput step did not finish: see run.log.", ""]
    trainer = tp["trainer"]
    setup = (
        f"batch {trainer['batch_size']} x {trainer['block_size']} tokens, "
        + ("bf16 autocast, fused AdamW" if "CPU" not in tp["device"] else "fp32")
        + (", torch.compile" if trainer["compile"] else "")
    )
    speedup_ok = tp["speedup"] >= tp["targets"]["speedup"]
    mfu_ok = trainer["mfu"] >= tp["targets"]["mfu"]
    lines = [
        heading,
        "",
        f"{tp['preset']} ({tp['parameters'] / 1e6:.1f}M parameters), {tp['poems']} poems, "
        f"{tp['steps']} timed steps per loop after two warm-up steps; MFU against "
        f"{tp['peak_tflops']:.0f} TFLOP/s (bf16 dense, data sheet).",
        "",
        "| loop | real tokens/s | MFU |",
        "|---|---:|---:|",
        f"| tutorial baseline (fp32, pad {tp['baseline']['context']}, batch 10, eager) | "
        f"{tp['baseline']['tokens_per_s']:,.0f} | {tp['baseline']['mfu']:.2%} |",
        f"| emoverse trainer ({setup}) | {trainer['tokens_per_s']:,.0f} | {trainer['mfu']:.2%} |",
        "",
        f"Speed-up {tp['speedup']:.1f}x (target {tp['targets']['speedup']:.0f}x: "
        f"{'met' if speedup_ok else 'short'}); MFU {trainer['mfu']:.1%} (target "
        f"{tp['targets']['mfu']:.0%}: {'met' if mfu_ok else 'short'}).",
        "",
    ]
    profile = Path(tp["profile"]) if tp.get("profile") else None
    if profile is not None and profile.is_file():
        table = profile.read_text().splitlines()[:30]
        lines += [
            "Short of a target: where the time goes, from the torch profiler (top operators; "
            f"the whole table and the trace in `{FIGURES}/`):",
            "",
            "```",
            *table,
            "```",
            "",
        ]
    return lines


def _training_table(family: dict, conditional: dict) -> list[str]:
    lines = [
        "| model | steps | epochs run | best epoch | train poems | val loss | seconds | tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [("foundation", (family.get("foundation") or {}).get("metrics"))]
    rows += [(e, m.get("metrics")) for e, m in family.get("models", {}).items()]
    if conditional:
        rows.append(("conditional", conditional.get("metrics")))
    for name, m in rows:
        if not m:
            why = family.get("models", {}).get(name, {})
            note = why.get("skipped") or why.get("failed") or "not trained"
            lines.append(f"| {name} | {note} | | | | | | |")
            continue
        lines.append(
            f"| {name} | {m.get('steps')} | {m.get('epochs_run')} | {m.get('best_epoch')} | "
            f"{m.get('train_poems')} | {_num(m.get('val_loss'), 3)} | {_num(m.get('seconds'))} | "
            f"{_num(m.get('tokens_per_second'), 0)} |"
        )
    return lines


def _judges(evaluations: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for ev in evaluations:
        for judge in ev.get("judges", {}):
            seen[judge] = None
    return list(seen)


KNOWN_FIELDS = {
    "emotion", "perplexity", "test_poems", "label_shares", "fidelity", "lift", "distinct_1",
    "distinct_2", "samples", "config_key", "n_samples", "label_counts", "judges",
    "sample_perplexity", "base_distinct_2",
}  # fmt: skip


def _fidelity_section(family: dict, conditional: dict) -> list[str]:
    from emoverse.emotions import EMOTIONS, NEUTRAL

    models = family.get("models", {})
    cond = conditional.get("emotions", {})
    evaluations = [m["evaluation"] for m in models.values() if "evaluation" in m]
    evaluations += [c["evaluation"] for c in cond.values()]
    lines = ["## Does each child carry its emotion?", ""]
    base = models.get(NEUTRAL, {}).get("evaluation")
    if not base:
        return [*lines, "The neutral base was not evaluated: see run.log.", ""]
    n = base.get("n_samples")
    lines += [
        f"Each model wrote {n} poems from a fixed seed; every judge labels each poem with the "
        "partitions' rule. Fidelity: the share labelled with the model's own emotion, with its "
        "95% Wilson interval; base: the neutral base's share of that emotion; lift: the "
        "difference; p: Fisher's exact one-sided test that the model's share is greater. "
        "The gate (champion or not) is decided under NRC, the partitions' lexicon.",
        "",
    ]
    for judge in _judges(evaluations):
        lines += [
            f"### Judge: {judge}",
            "",
            "| emotion | child | base | lift | p | conditional | lift | p |",
            "|---|---|---|---:|---:|---|---:|---:|",
        ]
        for emotion in EMOTIONS:
            child = models.get(emotion, {}).get("evaluation", {}).get("judges", {}).get(judge)
            c = cond.get(emotion, {}).get("evaluation", {}).get("judges", {}).get(judge)
            reason = models.get(emotion, {}).get("skipped") or models.get(emotion, {}).get("failed")
            left = (
                f"{_share(child['fidelity'])} | {_share(child.get('base'))} | "
                f"{_pct(child.get('lift'))} | {_p(child.get('p_value'))}"
                if child
                else f"{reason or 'n/a'} | | |"
            )
            right = (
                f"{_share(c['fidelity'])} | {_pct(c.get('lift'))} | {_p(c.get('p_value'))}"
                if c
                else "n/a | |"
            )
            lines.append(f"| {emotion} | {left} | {right} |")
        lines.append("")

    lines += [
        "### Perplexity and the fluency guard",
        "",
        "Own test perplexity: on the emotion's test poems (the gate wants the child below the "
        "base). Distinct-2 over the sampled poems (the gate wants at least 90% of the base's). "
        "Poems under the base: the sampled poems' perplexity under the neutral base (a child "
        "that piles up emotion words in broken verse scores high).",
        "",
        "| emotion | own ppl: child | base | conditional | distinct-2: child | base | "
        "conditional | poems under the base: child | conditional |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for emotion in EMOTIONS:
        ch = models.get(emotion, {}).get("evaluation") or {}
        co = cond.get(emotion, {}).get("evaluation") or {}
        lines.append(
            f"| {emotion} | {_num((ch.get('perplexity') or {}).get(emotion))} | "
            f"{_num(base['perplexity'].get(emotion))} | "
            f"{_num((co.get('perplexity') or {}).get(emotion))} | "
            f"{_num(ch.get('distinct_2'), 2)} | {_num(base.get('distinct_2'), 2)} | "
            f"{_num(co.get('distinct_2'), 2)} | {_num(ch.get('sample_perplexity'))} | "
            f"{_num(co.get('sample_perplexity'))} |"
        )
    lines += ["", "### The gate: where a child fails to beat its base, and why", ""]
    passed = [e for e in EMOTIONS if models.get(e, {}).get("gate", {}).get("passed")]
    lines.append(
        f"{len(passed)} of {len(EMOTIONS)} children pass the gate"
        + (f" ({', '.join(passed)})." if passed else ".")
    )
    lines.append("")
    for emotion in EMOTIONS:
        m = models.get(emotion, {})
        if "gate" in m and not m["gate"]["passed"]:
            lines.append(f"- **{emotion}**: {m['gate']['reason']}")
        elif "gate" not in m:
            lines.append(f"- **{emotion}**: {m.get('skipped') or m.get('failed') or 'not trained'}")
    lines.append("")

    extra = sorted(
        {
            k
            for ev in evaluations
            for k, v in ev.items()
            if k not in KNOWN_FIELDS and isinstance(v, int | float) and not isinstance(v, bool)
        }
    )
    if extra:  # measures added to the evaluation since this summary was written (verse, ...)
        lines += [
            "### Other measures",
            "",
            "| model | " + " | ".join(extra) + " |",
            "|---|" + "---:|" * len(extra),
        ]
        for name, ev in [(e, m["evaluation"]) for e, m in models.items() if "evaluation" in m] + [
            (f"conditional as {e}", c["evaluation"]) for e, c in cond.items()
        ]:
            lines.append(f"| {name} | " + " | ".join(_num(ev.get(k), 3) for k in extra) + " |")
        lines.append("")
    return lines


def _conditional_section(family: dict, conditional: dict) -> list[str]:
    lines = ["## The family against the conditional model", ""]
    if not conditional.get("emotions"):
        return [*lines, "The conditional step did not finish: see run.log.", ""]
    m = conditional.get("metrics", {})
    steps = sum(
        int(v["metrics"].get("steps", 0))
        for v in family.get("models", {}).values()
        if "metrics" in v
    )
    train_s = sum(
        float(v.get("train_seconds", 0))
        for v in family.get("models", {}).values()
        if "metrics" in v
    )
    lines += [
        f"Same budget: the base and the children took {steps} optimizer steps ({train_s:,.0f} s "
        f"of training); the conditional model ({conditional.get('balance')} balance) took "
        f"{m.get('steps')} steps ({_num(conditional.get('train_seconds'), 0)} s), "
        f"{m.get('train_poems')} poems per epoch. Preferred: the conditional model only if it "
        "beats the child by the promotion rule (fidelity under NRC by Fisher's test, own "
        "perplexity, distinct-2).",
        "",
        "| emotion | conditional preferred | reason |",
        "|---|---|---|",
    ]
    for emotion, c in conditional["emotions"].items():
        verdict = "yes" if c["preferred_over_child"] else "no"
        lines.append(f"| {emotion} | {verdict} | {c['reason']} |")
    lines.append("")
    return lines


def _guidance_lines() -> list[str]:
    from models.records import EvalConfig

    names = {f.name for f in dataclasses.fields(EvalConfig)}
    if "guidance" in names:
        default = next(f.default for f in dataclasses.fields(EvalConfig) if f.name == "guidance")
        return [
            "## Guided decoding",
            "",
            f"Every evaluation above used guidance at its default ({default}); this run did not "
            "evaluate the models unguided beside it.",
            "",
        ]
    return [
        "## Guided decoding",
        "",
        "Not measured: this version of the code has no guided decoding (`EvalConfig` has no "
        "`guidance` setting).",
        "",
    ]


def _samples_section(family: dict, conditional: dict) -> list[str]:
    from emoverse.emotions import EMOTIONS

    lines = ["## Sample poems", "", f"The first {SAMPLE_POEMS} poems of each model's sample."]
    for emotion in EMOTIONS:
        child = family.get("models", {}).get(emotion, {}).get("evaluation", {})
        cond = conditional.get("emotions", {}).get(emotion, {}).get("evaluation", {})
        lines += ["", f"### {emotion}"]
        for who, ev in (("child", child), ("conditional model", cond)):
            for i, poem in enumerate((ev.get("samples") or [])[:SAMPLE_POEMS], 1):
                lines += ["", f"{who}, poem {i}:", "", _quote(poem) or "> (empty)"]
    lines.append("")
    return lines


def write_summary(work: Path, out: Path, plan_name: str) -> None:
    run = _read(work / "run.json")
    corpus = _read(work / "corpus.json")
    family = _read(work / "family.json")
    conditional = _read(work / "conditional.json")
    throughput = _read(work / "throughput" / "throughput.json")
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(work, family, conditional)
    when = run.get("started") or f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    device = family.get("device") or throughput.get("device") or "unknown"
    dry = plan_name == "dry-run"

    def figure(name: str, alt: str) -> list[str]:
        return [f"![{alt}]({FIGURES}/{name})", ""] if (work / "figures" / name).is_file() else []

    lines = ["# emoverse on a GPU", ""]
    if dry:
        lines += [
            "**Dry run** (CPU, `scratch:tiny`, two books, a few steps and samples): it shows "
            "that every step of `bench/gpu_run.sh` runs; its figures mean nothing.",
            "",
        ]
    settings = family.get("settings") or {}
    lines += [
        f"{when}, {device}. Command: `{run.get('command', 'bash bench/gpu_run.sh')}` "
        "(bench/GPU.md says how it is called and what comes back).",
        "",
        f"Settings: {settings.get('base_model', 'n/a')}, at most {settings.get('max_steps')} "
        f"optimizer steps per stage, batch {settings.get('batch_size')} x "
        f"{settings.get('block_size')} tokens, {(family.get('eval') or {}).get('samples')} "
        "sampled poems per model. No Prefect and no registry: the library's functions, the "
        "flows' gate.",
        "",
        "## Steps",
        "",
        *_steps_table(run),
        "",
        *_throughput_lines(throughput, "## Training throughput"),
        "## The corpus",
        "",
    ]
    if corpus:
        lines += [
            f"{corpus['books']} books of {corpus['books_asked']} asked, {corpus['poems']:,} poems "
            f"(ingest {corpus['ingest_seconds']} s, tagging {corpus['tag_seconds']} s).",
            "",
            "| label | train | validation | test | all |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {label} | {s.get('train', 0)} | {s.get('validation', 0)} | "
                f"{s.get('test', 0)} | {corpus['counts'].get(label, 0)} |"
                for label, s in corpus["splits"].items()
            ),
            "",
            *figure("labels.png", "poems per label"),
        ]
    else:
        lines += ["The corpus step did not finish: see run.log.", ""]
    lines += [
        "## Training",
        "",
        *_training_table(family, conditional),
        "",
        *figure("loss-base.png", "loss curves of the foundation and the neutral base"),
        *figure("loss-children.png", "loss curves of the children"),
        *figure("loss-conditional.png", "loss curve of the conditional model"),
        *_fidelity_section(family, conditional),
        *_conditional_section(family, conditional),
        *_guidance_lines(),
        "## Confusion matrices",
        "",
        *[
            line
            for f in sorted(
                (f for f in figures if f.name.startswith("confusion-")),
                key=lambda f: ("conditional" in f.name, "nrc" not in f.name, f.name),
            )
            for line in figure(f.name, f.stem.replace("-", " "))
        ],
        *_samples_section(family, conditional),
    ]
    (out / "RESULTS.md").write_text("\n".join(lines))

    heading = f"## Training throughput on a GPU (`bench/train_throughput.py`, {when})"
    bench = _throughput_lines(throughput, heading)
    if throughput:
        command_file = work / "throughput" / "command.txt"
        command = command_file.read_text() if command_file.is_file() else "see run.log"
        bench.insert(
            2,
            f"{device}, `{command}`, run by `{run.get('command', 'bash bench/gpu_run.sh')}` "
            "(bench/GPU.md).\n",
        )
    if dry:
        bench.insert(2, "**Dry run on the CPU: the figures mean nothing.**\n")
    (out / "bench-RESULTS.md").write_text("\n".join(bench))

    results = {
        "run": run,
        "corpus": corpus,
        "family": family,
        "conditional": conditional,
        "throughput": throughput,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))

    with tarfile.open(out / "gpu-results.tar.gz", "w:gz") as tar:
        for f in figures:
            tar.add(f, arcname=f"{FIGURES}/{f.name}")
        for log in sorted((work / "logs").glob("*.log")):
            tar.add(log, arcname=f"{FIGURES}/logs/{log.name}")
        for name in ("profile.txt", "trace.json.gz"):
            f = work / "throughput" / name
            if f.is_file() and f.stat().st_size <= MAX_TRACE_BYTES:
                tar.add(f, arcname=f"{FIGURES}/{name}")
    print("wrote " + ", ".join(sorted(p.name for p in out.iterdir())))
