"""The GPU run: one call that measures emoverse on a lent GPU (runbook: bench/GPU.md).

    OUT=DIR bash bench/gpu_run.sh [--dry-run]       # wheels from .whl/, then `all` below
    python bench/gpu_run.py all [--dry-run] [--out DIR] [--work DIR] [--mirror PATH]
    python bench/gpu_run.py STEP --work DIR [--dry-run]   # one step, as `all` runs it

`all` unpacks the mirror, then runs each step as a child process under its own time limit, so
that a slow step cannot eat the next and a killed one leaves what it finished to the summary:

    check         imports and versions (torch, CUDA, the judges' packages)
    throughput    bench/train_throughput.py: the tutorial loop against the project's trainer
    corpus        every book of the mirror ingested and tagged (emoverse.corpus, emoverse.tagging)
    family        foundation, neutral base, eight children (models.training.stages), each
                  evaluated under every judge (models.evaluation.evaluate), the gate decided
    conditional   the conditional model at the family's step budget (base and children's steps
                  summed), evaluated as each emotion's model and compared with the child
    summary       what comes back in OUT: RESULTS.md (for the top of the repo), bench-RESULTS.md
                  (the throughput section for bench/RESULTS.md), results.json, run.log and
                  gpu-results.tar.gz (figures under bench/gpu-results/, every step's log, the
                  profiler's summary): five files, inside the device's limit of eight

Plain library functions, no Prefect and no MLflow registry (neither is on the device): the
gate and the preference between child and conditional model are decided by the functions the
flows use (`promotion_decision`, `preference_decision`), nothing is registered. The mirror is a
folder or a .tar.gz of one (`bench/gpu_prepare.sh` packs ../shared/gutenberg into
.gpu-mirror/mirror.tar.gz, which the device call carries); the run reads nothing else outside
the repo. `--dry-run`: `scratch:tiny`, two books, a few steps and samples, on the CPU: every
step end to end in minutes (tests/test_gpu_run.py), so that the script cannot rot.
"""

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PACKED_MIRROR = REPO / ".gpu-mirror" / "mirror.tar.gz"
SHARED_MIRROR = REPO.parent / "shared" / "gutenberg"
FIGURES = "bench/gpu-results"  # where the tarball's figures land, from the repo's root
OUT_FILES = ("RESULTS.md", "bench-RESULTS.md", "results.json", "run.log", "gpu-results.tar.gz")
STEPS = ("check", "throughput", "corpus", "family", "conditional", "summary")


@dataclass(frozen=True)
class Plan:
    """What one run trains and measures, and each step's time limit in seconds."""

    name: str
    books: tuple[int, ...] | None  # None: every book of the mirror
    settings: dict[str, Any]  # TrainingSettings fields
    eval: dict[str, Any]  # EvalConfig fields
    throughput: tuple[str, ...]  # bench/train_throughput.py arguments
    limits: dict[str, int] = field(default_factory=dict)


# 535 s of steps: the device runs one command for at most 600 s, and a lease is 15 min.
GPU = Plan(
    name="gpu",
    books=None,
    settings={
        "base_model": "scratch:small",
        # Per stage: bounds the family's time on a card never measured (the foundation is cut
        # at about 3 epochs of the mirror; the base and the children end on their own epochs).
        "max_steps": 800,
        # 16k tokens a step: small partitions (surprise, disgust: about 130 train poems, 46
        # blocks) still get a few steps per epoch.
        "batch_size": 32,
        "block_size": 512,
        "eval_samples": 256,
    },
    eval={"samples": 256, "batch_size": 64},
    # Books enough for one epoch of more than 22 full batches of 32 x 1024 tokens: the timed
    # steps never reach an epoch's short last batch, which a compiled model compiles again for.
    throughput=(
        *("--preset", "gpt2", "--steps", "20", "--books", "1041,574,12242,1365,1322,1279"),
        *("--batch-size", "32", "--block-size", "1024", "--compile"),
    ),
    limits={
        "check": 25,
        "throughput": 110,
        "corpus": 60,
        "family": 230,
        "conditional": 85,
        "summary": 25,
    },
)
# The same steps on the CPU in minutes: the smallest settings that still train and judge.
# Its limits only catch a hang: on a shared, loaded CPU every step is several times slower.
DRY_RUN = Plan(
    name="dry-run",
    books=(1041, 574),  # Shakespeare's Sonnets, Blake
    settings={
        "base_model": "scratch:tiny",
        "max_steps": 2,
        "foundation_epochs": 1,
        "batch_size": 8,
        "block_size": 64,
        "eval_samples": 4,
    },
    eval={"samples": 4, "max_new_tokens": 12, "max_test_poems": 4},
    throughput=(
        *("--preset", "tiny", "--steps", "1", "--books", "1041,574"),
        *("--batch-size", "8", "--block-size", "64"),
    ),
    limits={
        "check": 180,
        "throughput": 600,
        "corpus": 300,
        "family": 1200,
        "conditional": 900,
        "summary": 300,
    },
)


def plan_for(dry_run: bool) -> Plan:
    return DRY_RUN if dry_run else GPU


# --- files shared by the steps -------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    """Written whole, then renamed: a step killed at its limit leaves the last complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def unpack_mirror(mirror: Path, work: Path) -> Path:
    """The mirror as a folder: `mirror` itself, or a .tar.gz unpacked once under `work`."""
    if mirror.is_dir():
        return mirror
    if not mirror.is_file():
        raise SystemExit(
            f"no mirror at {mirror}: run bench/gpu_prepare.sh, or pass --mirror FOLDER|TAR.GZ"
        )
    dest = work / "mirror"
    if not (dest / "cache" / "epub").is_dir():
        with tarfile.open(mirror) as tar:
            tar.extractall(dest, filter="data")
    return dest


def book_ids(mirror: Path, books: tuple[int, ...] | None) -> list[int]:
    """`books`, or every book the mirror holds."""
    if books is not None:
        return list(books)
    return sorted(int(p.name) for p in (mirror / "cache" / "epub").iterdir() if p.name.isdigit())


# --- the steps ---------------------------------------------------------------------------------


def step_check(work: Path, plan: Plan) -> None:
    """What the run will use: Python, torch and its device, and each package's version."""
    from importlib import metadata

    import torch

    print(f"python {sys.version.split()[0]} at {sys.executable}")
    print(f"torch {torch.__version__}; device: {_device_name()}")
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        print(f"GPU memory: {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")
    names = (
        *("transformers", "tokenizers", "datasets", "pyarrow", "pydantic", "peft"),
        *("accelerate", "nrclex", "textblob", "nltk", "empath", "nade", "matplotlib"),
    )
    for name in names:
        try:
            print(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            print(f"{name}: not installed")
    import emoverse.tagging  # noqa: F401  (nrclex, textblob)
    import models.evaluation.evaluate  # noqa: F401  (datasets, transformers)
    from models.records import JUDGES

    print(f"judges: {', '.join(JUDGES)}")


def step_throughput(work: Path, plan: Plan, mirror: Path) -> None:
    out = work / "throughput"
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(REPO / "bench" / "train_throughput.py"),
        *plan.throughput,
        *("--mirror", str(mirror), "--json", str(out / "throughput.json")),
        *("--profile-dir", str(out)),
    ]
    for attempt in (command, [a for a in command if a != "--compile"]):
        shown = " ".join(["python", *attempt[1:]]).replace(f"{REPO}/", "")
        (out / "command.txt").write_text(shown)
        print(f"$ {shown}", flush=True)
        if subprocess.run(attempt).returncode == 0:
            return
        if attempt == command and "--compile" in command:
            print("failed with torch.compile: once more without it", flush=True)
            continue
        break
    raise SystemExit("the throughput bench failed")


def step_corpus(work: Path, plan: Plan, mirror: Path) -> None:
    from emoverse.corpus import ingest
    from emoverse.paths import RunPaths
    from emoverse.report import plot_label_distribution
    from emoverse.tagging import tag_poems

    paths = RunPaths(work / "run")
    ids = book_ids(mirror, plan.books)
    started = time.perf_counter()
    summary = ingest(str(mirror), ids, paths, max_parallel=8)
    ingested = time.perf_counter()
    tagged = tag_poems(paths.poems_file, paths.partitions)
    done = time.perf_counter()
    print(f"{summary.books} books, {summary.poems} poems; labels: {tagged.counts}")
    figures = work / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    plot_label_distribution(tagged.counts, figures / "labels.png")
    _write(
        work / "corpus.json",
        {
            "books_asked": len(ids),
            "books": summary.books,
            "poems": summary.poems,
            "rejected_books": [list(r) for r in summary.left_out],
            "counts": tagged.counts,
            "splits": tagged.manifest.get("splits", {}),
            "partitions_version": tagged.version,
            "ingest_seconds": round(ingested - started, 1),
            "tag_seconds": round(done - ingested, 1),
        },
    )


def _eval_config(plan: Plan):
    from models.records import EvalConfig

    return EvalConfig(**plan.eval)


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - started, 2)


def step_family(work: Path, plan: Plan) -> None:
    """Foundation, neutral base, eight children; each evaluated and gated as the flows do.
    family.json is rewritten after every model, so a step killed at its limit keeps them."""
    from emoverse.emotions import EMOTIONS, NEUTRAL
    from emoverse.paths import RunPaths
    from models.config import TrainingSettings
    from models.evaluation.evaluate import evaluate_model
    from models.evaluation.promotion import promotion_decision
    from models.folders.card import read_card_metadata, training_metrics
    from models.records import SkippedModel
    from models.training.stages import prepare_foundation, train_emotion_model

    paths = RunPaths(work / "run")
    settings = TrainingSettings(**plan.settings)
    foundation_config, base_config, child_config = settings.stage_configs()
    eval_config = _eval_config(plan)
    record: dict[str, Any] = {
        "device": _device_name(),
        "settings": settings.model_dump(),
        "eval": asdict(eval_config),
        "models": {},
    }
    state = work / "family.json"

    foundation, seconds = _timed(
        prepare_foundation,
        settings.base_model,
        paths.poems_file,
        paths.models,
        foundation_config,
        cache_dir=paths.hf_cache,
    )
    record["foundation"] = {
        "path": foundation,
        "seconds": seconds,
        "metrics": training_metrics(read_card_metadata(Path(foundation))),
    }
    _write(state, record)
    print(f"foundation: {seconds} s, {record['foundation']['metrics'].get('steps')} steps")

    base, train_s = _timed(
        train_emotion_model,
        NEUTRAL,
        foundation,
        partitions_dir=paths.partitions,
        models_dir=paths.models,
        config=base_config,
        parent=settings.base_model,
        min_poems=settings.min_poems,
        cache_dir=paths.hf_cache,
    )
    if isinstance(base, SkippedModel):
        raise SystemExit(f"no neutral base: {base.reason}")
    base_eval, eval_s = _timed(
        evaluate_model,
        base.path,
        NEUTRAL,
        paths.partitions,
        config=eval_config,
        cache_dir=paths.hf_cache,
    )
    record["models"][NEUTRAL] = {
        "path": base.path,
        "metrics": base.metrics,
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "evaluation": base_eval.to_dict(),
    }
    _write(state, record)
    print(f"neutral: trained {train_s} s, evaluated {eval_s} s")

    for emotion in EMOTIONS:
        try:
            child, train_s = _timed(
                train_emotion_model,
                emotion,
                base.path,
                partitions_dir=paths.partitions,
                models_dir=paths.models,
                config=child_config,
                parent="neutral base",
                min_poems=settings.min_poems,
                cache_dir=paths.hf_cache,
            )
            if isinstance(child, SkippedModel):
                record["models"][emotion] = {"skipped": child.reason}
                print(f"{emotion}: skipped ({child.reason})")
                continue
            evaluation, eval_s = _timed(
                evaluate_model,
                child.path,
                emotion,
                paths.partitions,
                base=base_eval,
                base_dir=base.path,
                config=eval_config,
                cache_dir=paths.hf_cache,
            )
            decision = promotion_decision(evaluation, base_eval)
            promote, reason = decision.promoted, decision.text
            record["models"][emotion] = {
                "path": child.path,
                "metrics": child.metrics,
                "train_seconds": train_s,
                "eval_seconds": eval_s,
                "evaluation": evaluation.to_dict(),
                "gate": {"passed": promote, "reason": reason},
            }
            print(f"{emotion}: trained {train_s} s, evaluated {eval_s} s; {reason}")
        except Exception as exc:  # one child failing does not stop the others, as in the flow
            record["models"][emotion] = {"failed": f"{type(exc).__name__}: {exc}"}
            print(f"{emotion}: failed: {type(exc).__name__}: {exc}")
        finally:
            _write(state, record)


def step_conditional(work: Path, plan: Plan) -> None:
    """The conditional model from the family's foundation, with as many optimizer steps as the
    base and the children took together, evaluated as each emotion's model against the same
    base and compared with the child by the promotion rule."""
    from emoverse.emotions import EMOTIONS, NEUTRAL
    from emoverse.paths import RunPaths
    from models.config import TrainingSettings
    from models.evaluation.evaluate import evaluate_model
    from models.evaluation.promotion import preference_decision
    from models.records import Evaluation, SkippedModel
    from models.training.conditional import train_conditional_model
    from models.training.stages import prepare_foundation

    paths = RunPaths(work / "run")
    family = _read(work / "family.json")
    trained_family = {e: m for e, m in family.get("models", {}).items() if "metrics" in m}
    budget = sum(int(m["metrics"].get("steps", 0)) for m in trained_family.values())
    settings = TrainingSettings(**plan.settings)
    if budget:
        settings = settings.model_copy(update={"conditional_max_steps": budget})
    foundation_config, _, _ = settings.stage_configs()
    start = (family.get("foundation") or {}).get("path") or prepare_foundation(
        settings.base_model,
        paths.poems_file,
        paths.models,
        foundation_config,
        cache_dir=paths.hf_cache,
    )
    config = settings.conditional_config()
    trained, train_s = _timed(
        train_conditional_model,
        start,
        partitions_dir=paths.partitions,
        models_dir=paths.models,
        config=config,
        parent=settings.base_model,
        balance=settings.conditional_balance,
        cache_dir=paths.hf_cache,
    )
    if isinstance(trained, SkippedModel):
        raise SystemExit(f"no conditional model: {trained.reason}")
    base = trained_family.get(NEUTRAL)
    base_eval = Evaluation.from_dict(base["evaluation"]) if base else None
    record: dict[str, Any] = {
        "path": trained.path,
        "budget_steps": budget or None,
        "balance": settings.conditional_balance,
        "metrics": trained.metrics,
        "train_seconds": train_s,
        "emotions": {},
    }
    state = work / "conditional.json"
    _write(state, record)
    print(f"conditional: trained {train_s} s, {trained.metrics.get('steps')} steps")
    for emotion in EMOTIONS:
        evaluation, eval_s = _timed(
            evaluate_model,
            trained.path,
            emotion,
            paths.partitions,
            base=base_eval,
            base_dir=base["path"] if base else None,
            config=_eval_config(plan),
            cache_dir=paths.hf_cache,
            conditional=True,
        )
        child = trained_family.get(emotion)
        child_eval = Evaluation.from_dict(child["evaluation"]) if child else None
        preference = preference_decision(evaluation, child_eval)
        better, reason = preference.promoted, preference.text
        record["emotions"][emotion] = {
            "eval_seconds": eval_s,
            "evaluation": evaluation.to_dict(),
            "preferred_over_child": better,
            "reason": reason,
        }
        _write(state, record)
        print(f"{emotion}: evaluated {eval_s} s; preferred over the child: {better}")


# --- the orchestration ----------------------------------------------------------------------


def _run_step(
    step: str, argv: list[str], limit: int, log_dir: Path, run_log: TextIO
) -> dict[str, Any]:
    """One step as a child process in its own session, its output to its log, run.log and
    stdout; past `limit` seconds the whole session is killed."""
    log_dir.mkdir(parents=True, exist_ok=True)
    header = f"\n===== {step} (limit {limit} s) {dt.datetime.now(dt.UTC):%H:%M:%S} UTC =====\n"
    print(header, end="", flush=True)
    run_log.write(header)
    started = time.perf_counter()
    with (log_dir / f"{step}.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), step, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
            cwd=REPO,
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                for sink in (log, run_log, sys.stdout):
                    sink.write(line)
                    sink.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
    seconds = round(time.perf_counter() - started, 1)
    outcome = {"rc": proc.returncode, "seconds": seconds, "limit": limit, "timed_out": timed_out}
    footer = f"----- {step}: " + (
        f"killed at its limit of {limit} s" if timed_out else f"exit {proc.returncode}"
    )
    footer += f", {seconds} s\n"
    print(footer, end="", flush=True)
    run_log.write(footer)
    return outcome


def run_all(args: argparse.Namespace) -> int:
    plan = plan_for(args.dry_run)
    out, work = args.out.resolve(), args.work.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    mirror = unpack_mirror(args.mirror.resolve(), work)
    command = os.environ.get("EMOVERSE_GPU_COMMAND") or " ".join(
        ["python", "bench/gpu_run.py", *sys.argv[1:]]
    )
    _write(
        work / "run.json",
        {
            "plan": plan.name,
            "command": command,
            "started": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            "mirror": str(args.mirror),
            "steps": {},
        },
    )
    common = [
        "--work",
        str(work),
        "--mirror",
        str(mirror),
        *(["--dry-run"] if args.dry_run else []),
    ]
    failed = []
    with (out / "run.log").open("a") as run_log:
        for step in STEPS:
            argv = [*common, "--out", str(out)] if step == "summary" else common
            outcome = _run_step(step, argv, plan.limits[step], work / "logs", run_log)
            run = _read(work / "run.json")
            run["steps"][step] = outcome
            _write(work / "run.json", run)
            if outcome["rc"] != 0:
                failed.append(step)
    missing = [name for name in OUT_FILES if not (out / name).is_file()]
    print(f"\nin {out}: " + ", ".join(p.name for p in sorted(out.iterdir())))
    if missing:
        print(f"missing: {', '.join(missing)}")
    if failed:
        print(f"steps that did not finish: {', '.join(failed)} (see run.log)")
    return 1 if failed or missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("all", *STEPS))
    parser.add_argument("--dry-run", action="store_true", help="scratch:tiny, 2 books, CPU")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "gpu-out"))
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/emoverse-gpu-work"), help="data and models"
    )
    parser.add_argument(
        "--mirror",
        type=Path,
        default=PACKED_MIRROR if PACKED_MIRROR.is_file() else SHARED_MIRROR,
        help="a Gutenberg mirror folder or a .tar.gz of one (default: .gpu-mirror/mirror.tar.gz, "
        "else ../shared/gutenberg)",
    )
    args = parser.parse_args(argv)
    if args.step == "all":
        return run_all(args)
    plan = plan_for(args.dry_run)
    work = args.work.resolve()
    if args.step == "check":
        step_check(work, plan)
    elif args.step == "throughput":
        step_throughput(work, plan, args.mirror.resolve())
    elif args.step == "corpus":
        step_corpus(work, plan, args.mirror.resolve())
    elif args.step == "family":
        step_family(work, plan)
    elif args.step == "conditional":
        step_conditional(work, plan)
    else:
        from gpu_summary import write_summary

        write_summary(work, args.out.resolve(), plan.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
