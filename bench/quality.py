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
gate's margin (models/records.py, BASE_PERPLEXITY_MARGIN) must allow for.
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
    args = parser.parse_args()

    from emoverse.judgements import JudgementStore
    from emoverse.paths import RunPaths
    from emoverse.tagging import read_manifest
    from flows.pipeline import pipeline
    from models.config import TrainingSettings
    from models.family_report import write_family_report
    from models.registry import ModelRegistry

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
    from models.evaluate import evaluate_model
    from models.records import EvalConfig
    from models.stages import prepare_foundation, train_emotion_model

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


if __name__ == "__main__":
    sys.exit(main())
