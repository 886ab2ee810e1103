"""`emoverse`: run the pipeline or one stage, generate a poem, list the registry.

Input is checked here, before any flow starts, so bad input costs no server start and
prints one line naming the problem.
"""

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from emoverse.emotions import LABELS, check_label
from emoverse.errors import EmoverseError
from emoverse.settings import (
    DEFAULT_BASE_MODEL,
    curated_ids,
    default_data_dir,
    default_mirror,
    parse_ids,
)

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _bounded(lo: int, hi: int, name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _positive_float(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not 0 < value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be between 0 and 1, got {value}")
        return value

    return parse


def _bounded_float(lo: float, hi: float, name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _generation_bound(option: str, flag: str, *, integer: bool = True):
    """A parser checking `flag` against the bounds `models.generate` enforces for `option`,
    imported when a flag is parsed: listing models need not import torch."""

    def parse(text: str) -> float:
        from models.generate import BOUNDS

        lo, hi = BOUNDS[option]
        if integer:
            return _bounded(int(lo), int(hi), flag)(text)
        return _bounded_float(lo, hi, flag)(text)

    return parse


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where runs write (default: $EMOVERSE_DATA_DIR or ./data/run)",
    )
    common.add_argument(
        "--mirror",
        default=None,
        help="Gutenberg mirror: a URL or a folder in cache/epub/<id>/pg<id>.txt layout "
        "(default: $EMOVERSE_GUTENBERG_MIRROR or the Project Gutenberg site)",
    )
    common.add_argument(
        "--ids",
        default=None,
        help="comma-separated Gutenberg ids (default: the curated list in data/curated_ids.txt)",
    )
    common.add_argument(
        "--base-model",
        default=DEFAULT_BASE_MODEL,
        help="a Hugging Face id or local folder, or scratch:tiny (default: %(default)s)",
    )

    training = argparse.ArgumentParser(add_help=False)
    training.add_argument(
        "--min-poems",
        type=_bounded(1, 10**6, "--min-poems"),
        default=1,
        help="skip a partition with fewer training poems than this (default: %(default)s)",
    )
    training.add_argument(
        "--foundation-epochs",
        type=_bounded(1, 1000, "--foundation-epochs"),
        default=None,
        help="epochs of from-scratch pretraining on every poem (scratch presets only)",
    )
    training.add_argument("--base-epochs", type=_bounded(1, 1000, "--base-epochs"), default=None)
    training.add_argument("--child-epochs", type=_bounded(1, 1000, "--child-epochs"), default=None)
    training.add_argument(
        "--max-steps",
        type=_bounded(1, 10**7, "--max-steps"),
        default=None,
        help="cap on optimizer steps per model (quick runs)",
    )
    training.add_argument("--batch-size", type=_bounded(1, 4096, "--batch-size"), default=None)
    training.add_argument(
        "--block-size",
        type=_bounded(8, 8192, "--block-size"),
        default=None,
        help="tokens per packed training block",
    )
    training.add_argument(
        "--learning-rate",
        type=_positive_float("--learning-rate"),
        default=None,
        help="peak learning rate of every stage",
    )
    training.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile the model (GPUs)"
    )
    training.add_argument(
        "--adapter",
        choices=["lora"],
        default=None,
        help="train the eight children as LoRA adapters on the base (small, quick)",
    )

    parser = argparse.ArgumentParser(
        prog="emoverse", description="Emotion-conditioned poetry from Project Gutenberg."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fetching = argparse.ArgumentParser(add_help=False)
    fetching.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help="Gutenberg catalog CSV (pg_catalog.csv format): without --ids, ingest its English "
        "poetry books; it also supplies titles and authors",
    )
    fetching.add_argument(
        "--max-parallel",
        type=_bounded(1, 16, "--max-parallel"),
        default=2,
        help="downloads at a time (default: %(default)s, polite to the mirror)",
    )
    sub.add_parser("run", parents=[common, fetching, training], help="the whole pipeline")
    ingest = sub.add_parser(
        "ingest", parents=[common, fetching], help="fetch books and split them into poems"
    )
    ingest.add_argument("--report", action="store_true", help="print poems and rejects per book")
    tag = sub.add_parser("tag", parents=[common], help="tag poems into nine emotion partitions")
    tag.add_argument(
        "--report",
        action="store_true",
        help="print the current partitions' label distribution per split (runs nothing)",
    )
    tag.add_argument(
        "--min-hits",
        type=_bounded(1, 10**6, "--min-hits"),
        default=1,
        help="the top emotion needs at least this many hits, else neutral (default: %(default)s)",
    )
    tag.add_argument(
        "--min-margin",
        type=_bounded(1, 10**6, "--min-margin"),
        default=1,
        help="the top emotion must beat the runner-up by this much, else neutral "
        "(default: %(default)s)",
    )
    tag.add_argument(
        "--lemmatize",
        action="store_true",
        help="look words up by their WordNet noun lemma (needs NLTK's wordnet data)",
    )
    tag.add_argument(
        "--workers",
        type=_bounded(1, 256, "--workers"),
        default=None,
        help="processes for corpora of 1M+ lines (default: one per CPU)",
    )
    sub.add_parser("train", parents=[common, training], help="train the base and the children")
    gen = sub.add_parser("generate", parents=[common], help="write a poem with an emotion's model")
    gen.add_argument("--emotion", required=True, help=f"one of: {', '.join(LABELS)}")
    gen.add_argument("--prompt", default="", help="the poem's first words")
    gen.add_argument("--seed", type=_generation_bound("seed", "--seed"), default=0)
    gen.add_argument("-n", type=_bounded(1, 64, "-n"), default=1, help="how many poems")
    gen.add_argument(
        "--max-new-tokens",
        type=_generation_bound("max_new_tokens", "--max-new-tokens"),
        default=120,
        help="longest poem in tokens, at most the model's context less the prompt "
        "(default: %(default)s)",
    )
    gen.add_argument(
        "--temperature",
        type=_generation_bound("temperature", "--temperature", integer=False),
        default=0.9,
        help="below 1 safer, above 1 wilder (default: %(default)s)",
    )
    gen.add_argument(
        "--top-k",
        type=_generation_bound("top_k", "--top-k"),
        default=50,
        help="sample among the k likeliest tokens; 0 turns it off (default: %(default)s)",
    )
    gen.add_argument(
        "--top-p",
        type=_generation_bound("top_p", "--top-p", integer=False),
        default=0.95,
        help="sample within this share of probability; 1 turns it off (default: %(default)s)",
    )
    gen.add_argument(
        "--no-repeat-ngram-size",
        type=_generation_bound("no_repeat_ngram_size", "--no-repeat-ngram-size"),
        default=3,
        help="never repeat an n-gram of this size; 0 allows repeats (default: %(default)s)",
    )
    serve = sub.add_parser(
        "serve", parents=[common], help="serve the models over HTTP, with a page at /"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback)"
    )
    serve.add_argument("--port", type=_bounded(1, 65535, "--port"), default=8000)
    from emoverse.batcher import BatchSettings  # no torch: cheap

    batching = BatchSettings()
    serve.add_argument(
        "--batch-window-ms",
        type=_bounded_float(0, 1000, "--batch-window-ms"),
        default=batching.window_ms,
        help="how long a request waits for others to share its batch (default: %(default)s)",
    )
    serve.add_argument(
        "--max-batch",
        type=_bounded(1, 256, "--max-batch"),
        default=batching.max_batch,
        help="poems written at once per model (default: %(default)s)",
    )
    serve.add_argument(
        "--max-queue",
        type=_bounded(1, 100_000, "--max-queue"),
        default=batching.max_queue,
        help="requests waiting per model; more get a 503 with Retry-After (default: %(default)s)",
    )
    serve.add_argument(
        "--request-timeout",
        type=_bounded_float(0.1, 3600, "--request-timeout"),
        default=batching.timeout_s,
        help="seconds a request may take, queue included; then a 504 (default: %(default)s)",
    )
    models = sub.add_parser("models", parents=[common], help="what the model registry holds")
    models.add_argument("--emotion", default=None, help="only this emotion")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    change = models.add_mutually_exclusive_group()
    change.add_argument(
        "--promote",
        type=_bounded(1, 10**9, "--promote"),
        metavar="VERSION",
        default=None,
        help="make VERSION the emotion's champion (needs --emotion)",
    )
    change.add_argument(
        "--rollback",
        action="store_true",
        help="give the champion back to the version before (needs --emotion)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_environment()
    try:
        return _dispatch(args)
    except EmoverseError as exc:
        print(f"emoverse: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("emoverse: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    data_dir = (args.data_dir or default_data_dir()).resolve()
    if args.command == "generate":
        return _generate(args, data_dir)
    if args.command == "serve":
        return _serve(args, data_dir)
    if args.command == "models":
        return _models(args, data_dir)
    if args.command == "tag" and args.report:  # reads the manifest: no flow, no server
        from emoverse.settings import RunPaths
        from emoverse.tagging import tag_report

        print(tag_report(RunPaths(data_dir).partitions))
        return 0
    if args.command == "tag":
        from emoverse.tagging import lemmatizer_for

        lemmatizer_for(args.lemmatize)  # a missing WordNet fails here, not mid-run

    from emoverse.gutenberg import check_mirror
    from models.config import is_scratch, scratch_preset

    mirror = args.mirror or default_mirror()
    catalog = getattr(args, "catalog", None)
    if catalog is not None and not catalog.is_file():
        raise EmoverseError(f"catalog file {catalog} does not exist")
    if args.ids:
        ids = parse_ids(args.ids)
    elif catalog is not None:
        from emoverse.gutenberg import poetry_ids_from_catalog

        ids = poetry_ids_from_catalog(catalog)
    else:
        ids = curated_ids()
    if args.command in ("run", "ingest"):
        check_mirror(mirror)
    if is_scratch(args.base_model):
        scratch_preset(args.base_model)  # unknown preset names fail here, not mid-run

    from flows.corpus import ingest, tag
    from flows.params import TrainingSettings
    from flows.pipeline import pipeline
    from flows.training import train

    _hide_tracebacks_of_user_errors()

    data = str(data_dir)
    settings = TrainingSettings()
    if args.command in ("run", "train"):
        settings = TrainingSettings(
            **{
                key: value
                for key in (
                    *("base_model", "min_poems", "foundation_epochs", "base_epochs"),
                    *("child_epochs", "max_steps", "adapter", "batch_size", "block_size"),
                    *("learning_rate", "compile"),
                )
                if (value := getattr(args, key)) is not None
            }
        )
    try:
        if args.command == "ingest":
            result = ingest(data, mirror, ids, _str(catalog), args.max_parallel)
            _print_ingest(result)
            if args.report:
                from emoverse.gutenberg import ingest_report

                print(ingest_report(Path(result["path"]).parent))
        elif args.command == "tag":
            _print_counts(
                tag(
                    data,
                    min_hits=args.min_hits,
                    min_margin=args.min_margin,
                    lemmatize=args.lemmatize,
                    workers=args.workers,
                )
            )
        elif args.command == "train":
            _print_training(train(data, settings))
        else:
            result = pipeline(data, mirror, ids, _str(catalog), args.max_parallel, settings)
            _print_ingest(result["ingest"])
            _print_counts(result["partitions"])
            _print_training(result)
    except EmoverseError:
        raise
    except RuntimeError as exc:  # a stage failed; Prefect has logged the details above
        print(f"emoverse: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _str(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


def _print_ingest(result: dict) -> None:
    print(f"{result['poems']} poems from {result['books']} books -> {result['path']}")
    print(
        f"{result['rejected_books']} books rejected ({result['rejects']} reject rows) -> "
        f"{result['rejects_path']}; {result['fetched']} downloaded, "
        f"{result['from_cache']} from the cache"
    )


def _print_counts(counts: dict[str, int]) -> None:
    total = max(1, sum(counts.values()))
    print("poems per partition:")
    for label in LABELS:
        print(f"  {label:<13}{counts.get(label, 0):>7}  {counts.get(label, 0) / total:6.1%}")


def _print_training(result: dict) -> None:
    for emotion, version in result["registered"].items():
        role = "champion" if emotion in result["champions"] else "not champion"
        print(f"emoverse-{emotion} v{version} ({role}): {result['promotion'][emotion]}")
    for emotion, reason in result["skipped"].items():
        print(f"skipped {emotion}: {reason}")


def _generate(args: argparse.Namespace, data_dir: Path) -> int:
    emotion = check_label(args.emotion)
    from emoverse.errors import GenerationSettingError
    from models.generate import GenerationRequest, PoemGenerator
    from models.registry import ModelRegistry

    options = (
        *("prompt", "n", "seed", "max_new_tokens"),
        *("temperature", "top_k", "top_p", "no_repeat_ngram_size"),
    )
    request = GenerationRequest.from_options(**{name: getattr(args, name) for name in options})
    record, warning = ModelRegistry.for_data_dir(data_dir).current(emotion)
    if warning:
        print(f"emoverse: warning: {warning}", file=sys.stderr)
    try:
        poems = PoemGenerator(record.path).generate(request)
    except GenerationSettingError as exc:  # name the flag, not the field
        flag = "-n" if exc.option == "n" else "--" + exc.option.replace("_", "-")
        raise EmoverseError(f"{flag} {exc.problem}") from None
    print(f"# emoverse-{emotion} v{record.version}, seed {args.seed}", file=sys.stderr)
    print("\n\n---\n\n".join(poems))
    return 0


def _serve(args: argparse.Namespace, data_dir: Path) -> int:
    from emoverse.batcher import BatchSettings
    from emoverse.serve import serve

    batching = BatchSettings(
        window_ms=args.batch_window_ms,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        timeout_s=args.request_timeout,
    )
    serve(data_dir, host=args.host, port=args.port, batching=batching)
    return 0


def _models(args: argparse.Namespace, data_dir: Path) -> int:
    emotion = check_label(args.emotion) if args.emotion else None
    from models.registry import ModelRegistry

    registry = ModelRegistry.for_data_dir(data_dir)
    if args.promote is not None or args.rollback:
        if emotion is None:
            raise EmoverseError("--promote and --rollback need --emotion")
        record = (
            registry.promote(emotion, args.promote)
            if args.promote is not None
            else registry.rollback(emotion)
        )
        print(f"emoverse-{emotion} champion is now v{record.version} ({record.path})")
        return 0
    records = registry.list(emotion)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    if not records:
        print(f"the registry under {data_dir} holds no models yet")
        return 0
    print(f"{'emotion':<13}{'version':>8}  {'aliases':<10}{'val_loss':>9}  path")
    for r in records:
        val = r.metrics.get("val_loss")
        val_text = f"{val:.3f}" if isinstance(val, int | float) else "-"
        print(f"{r.emotion:<13}{r.version:>8}  {','.join(r.aliases):<10}{val_text:>9}  {r.path}")
    return 0


class _UserErrorsWithoutTraceback(logging.Filter):
    """Prefect logs every failed task with its traceback. For bad input (an EmoverseError)
    the message says all there is to say; real bugs keep their tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EmoverseError):
            record.exc_info = None
            record.exc_text = None
        return True


def _hide_tracebacks_of_user_errors() -> None:
    for name in ("prefect", ""):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_UserErrorsWithoutTraceback())


def _quiet_environment() -> None:
    # Offline machines cannot reach Prefect's telemetry endpoint; do not make every run try.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
