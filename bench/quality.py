"""Model quality on a CPU: the whole family trained from scratch on a subset of the shared
mirror big enough that every partition has test poems, evaluated with 128 samples per model
under both judges, and the family table printed.

    .venv/bin/python bench/quality.py [--mirror-dir ../shared/gutenberg] [--books 60]
        [--eval-samples 128] [--data-dir DIR] [--out DIR]

Books: the first `--books` of the mirror's MANIFEST.tsv in id order (every book the mirror has
when `--books` is 0); 60 give 8,516 poems, and every partition test poems (surprise 2, disgust
5). Recipe: `scratch:tiny`, a foundation of one epoch on every poem, the neutral base and each
child 2 epochs (early stopping on validation loss), every stage capped at `--max-steps` (300)
optimizer steps so that the whole family trains in well under 30 minutes on 2 cores, through
the real `pipeline` flow (a temporary Prefect server). Prints the partition sizes, the wall time
and the family report's table; the report with its figures goes to `--out`. Then trains the
neutral base again from the same foundation with other seeds (`--reseeds`, default 2) and
prints how far their neutral test perplexities fall from the first: the noise that the base
gate's margin (models/evaluation/promotion.py, BASE_PERPLEXITY_MARGIN) must allow for.

`--conditional plain,sqrt` then trains the conditional model (one model for every emotion, a
control token before each poem) once per balance, from the same foundation, with the same total
training budget as the family: as many optimizer steps as the base and the eight children
took together. Prints, per emotion, the child and each conditional model side by side
(fidelity under NRC with its interval, lift over the base, own-emotion test perplexity,
distinct-2) and which the promotion rule prefers.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_MIRROR = REPO.parent / "shared" / "gutenberg"


def book_ids(mirror: Path, n: int) -> list[int]:
    lines = (mirror / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    ids = sorted(int(line.split("\t")[0]) for line in lines if line.strip())
    return ids if n == 0 else ids[:n]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror-dir", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument("--books", type=int, default=60)
    parser.add_argument("--eval-samples", type=int, default=128)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--out", type=Path, default=Path("bench/quality-report"))
    parser.add_argument("--reseeds", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=300, help="per stage")
    parser.add_argument(
        "--conditional",
        default="",
        metavar="BALANCE[,...]",
        help="also train the conditional model with each balance (plain, sqrt) at the "
        "family's total step budget, and compare",
    )
    args = parser.parse_args()

    from emoverse.judgements import JudgementStore
    from emoverse.paths import RunPaths
    from emoverse.tagging import read_manifest
    from flows.pipeline import pipeline
    from models.config import TrainingSettings
    from models.registry.model_registry import ModelRegistry
    from models.reports.family import write_family_report

    ids = book_ids(args.mirror_dir, args.books)
    settings = TrainingSettings(
        base_model="scratch:tiny",
        foundation_epochs=1,
        base_epochs=2,
        child_epochs=2,
        max_steps=args.max_steps,
        eval_samples=args.eval_samples,
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = RunPaths(args.data_dir or Path(tmp) / "run")
        started = time.perf_counter()
        pipeline(str(paths.data_dir), str(args.mirror_dir), ids, settings=settings)
        seconds = time.perf_counter() - started
        manifest = read_manifest(paths.partitions) or {}
        registry = ModelRegistry.for_data_dir(paths.data_dir)
        report = write_family_report(
            registry, JudgementStore(paths.judgements_db), paths.partitions, args.out
        )
        spread = reseeded_bases(paths, settings, registry, args.reseeds, args.eval_samples)
        balances = [b for b in args.conditional.split(",") if b]
        comparison = compare_conditional(paths, settings, registry, balances) if balances else []
        if balances:  # the report again, with the conditional section
            report = write_family_report(
                registry, JudgementStore(paths.judgements_db), paths.partitions, args.out
            )
    print(f"{len(ids)} books, {manifest.get('rows', 0):,} poems; whole run {seconds / 60:.1f} min")
    print()
    print("| label | train | validation | test |")
    print("|---|---:|---:|---:|")
    for label, splits in manifest.get("splits", {}).items():
        print(f"| {label} | {splits['train']} | {splits['validation']} | {splits['test']} |")
    empty = [label for label, s in manifest.get("splits", {}).items() if s["test"] == 0]
    if empty:
        print(f"\nno test poems for: {', '.join(empty)} (use more --books)")
    print()
    lines = report.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| emotion |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    print("\n".join(lines[start:end]))
    print(f"\nreport: {report}")
    if comparison:
        print()
        print("\n".join(comparison))
    if spread:
        first, others = spread[0], spread[1:]
        print(
            "\nneutral base reseeded (same foundation, data and recipe): neutral test "
            f"perplexity {first:.2f} (seed 0), "
            + ", ".join(f"{p:.2f} ({(p / first - 1):+.1%})" for p in others)
        )
    return 0


def reseeded_bases(paths, settings, registry, reseeds: int, samples: int) -> list[float]:
    """The champion base's neutral test perplexity, then that of bases trained like it from
    the same foundation with seeds 1..reseeds."""
    from emoverse.emotions import NEUTRAL
    from models.evaluation.evaluate import evaluate_model
    from models.records import EvalConfig
    from models.training.stages import prepare_foundation, train_emotion_model

    foundation_config, base_config, _ = settings.stage_configs()
    foundation = prepare_foundation(
        settings.base_model,
        paths.poems_file,
        paths.models,
        foundation_config,
        cache_dir=paths.hf_cache,
    )
    champion = registry.get(NEUTRAL)
    config = EvalConfig(samples=samples)
    perplexities = [champion.metrics["evaluation"]["perplexity"][NEUTRAL]]
    for seed in range(1, reseeds + 1):
        trained = train_emotion_model(
            NEUTRAL,
            foundation,
            partitions_dir=paths.partitions,
            models_dir=paths.models,
            config=base_config.with_overrides(seed=seed),
            parent=settings.base_model,
            cache_dir=paths.hf_cache,
        )
        evaluation = evaluate_model(trained.path, NEUTRAL, paths.partitions, config=config)
        perplexities.append(evaluation.perplexity[NEUTRAL])
    return perplexities


def compare_conditional(paths, settings, registry, balances: list[str]) -> list[str]:
    """Train the conditional model once per balance at the family's total step budget; the
    comparison table (markdown lines)."""
    import time

    from emoverse.emotions import CONDITIONAL, EMOTIONS, LABELS
    from flows.training import train_conditional
    from models.evaluation.promotion import preference_decision
    from models.records import Evaluation

    family = {label: registry.current(label)[0] for label in LABELS if registry.list(label)}
    budget = sum(int(r.metrics.get("steps", 0)) for r in family.values())
    models: dict[str, dict] = {}
    for balance in balances:
        started = time.perf_counter()
        result = train_conditional(
            str(paths.data_dir),
            settings=settings.model_copy(
                update={"conditional_balance": balance, "conditional_max_steps": budget}
            ),
        )
        record = registry.get(CONDITIONAL, version=result["registered"][CONDITIONAL])
        models[balance] = {"record": record, "wall": time.perf_counter() - started}

    def cells(ev: Evaluation, emotion: str) -> str:
        nrc = ev.judges.get("nrc", {})
        fid, lift = ev.fidelity_of("nrc"), nrc.get("lift")
        ppl = ev.perplexity.get(emotion)
        return (
            f"{fid.share:.0%} [{fid.low:.0%}-{fid.high:.0%}] | "
            + ("n/a" if lift is None else f"{lift:+.0%}")
            + f" | {'n/a' if ppl is None else f'{ppl:,.0f}'} | {ev.distinct_2:.2f}"
        )

    lines = [
        f"Family: {budget} optimizer steps in all (base and children), "
        f"{sum(float(r.metrics.get('seconds', 0)) for r in family.values()):,.0f} s of training.",
        *(
            f"Conditional ({b}): {m['record'].metrics['steps']} steps, "
            f"{m['record'].metrics['seconds']:,.0f} s of training, "
            f"{m['record'].metrics['train_poems']:,} poems per epoch"
            for b, m in models.items()
        ),
        "",
        "| emotion | model | fidelity (NRC) | lift | own ppl | distinct-2 | preferred over child |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for emotion in EMOTIONS:
        child = family.get(emotion)
        child_eval = child.evaluation if child else None
        if child_eval is not None:
            lines.append(f"| {emotion} | child | {cells(child_eval, emotion)} | |")
        for balance, m in models.items():
            ev = m["record"].evaluations[emotion]
            better = preference_decision(ev, child_eval).promoted
            verdict = "yes" if better else "no"
            lines.append(
                f"| {emotion} | conditional {balance} | {cells(ev, emotion)} | {verdict} |"
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())
