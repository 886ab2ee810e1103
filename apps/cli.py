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
from dataclasses import replace
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import ValidationError

from emoverse import settings as env
from emoverse.emotions import LABELS, check_label, model_name
from emoverse.errors import EmoverseError, SettingError
from emoverse.paths import RunPaths
from emoverse.settings import parse_ids
from models.config import TRAIN_MODES, TrainingSettings, setting_error
from models.records import JUDGES, Evaluation

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _check(text: str, lo: float, hi: float, flag: str, *, integer: bool) -> float:
    """`text` as a number within [lo, hi], else the argparse error naming `flag`."""
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise argparse.ArgumentTypeError(f"{flag} must be {kind}, got {text!r}") from None
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"{flag} must be between {lo} and {hi}, got {value}")
    return value


def _bounded(lo: float, hi: float, flag: str, *, integer: bool = True):
    return lambda text: _check(text, lo, hi, flag, integer=integer)


def _generation_bound(option: str, flag: str, *, integer: bool = True):
    """A parser checking `flag` against the bounds
    `models.generation.generate` enforces for `option`
    (its BOUNDS table), imported when a flag is parsed: listing models need not import torch."""

    def parse(text: str) -> float:
        from models.generation.generate import BOUNDS

        return _check(text, *BOUNDS[option], flag, integer=integer)

    return parse


def _blend(text: str) -> dict[str, float]:
    """`--blend joy=0.7,fear=0.5`, checked by `models.generation.blend` (imported when parsed)."""
    from emoverse.errors import GenerationSettingError
    from models.generation.blend import parse_blend

    try:
        return parse_blend(text)
    except GenerationSettingError as exc:
        raise argparse.ArgumentTypeError(f"--blend {exc.problem}") from None


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainingSettings field (`--base-epochs` for base_epochs), its help the
    field's description; values are checked by TrainingSettings itself (`_training`)."""
    for name, field in TrainingSettings.model_fields.items():
        if name == "overrides":  # a dict: flows and the API only
            continue
        flag = "--" + name.replace("_", "-")
        default = f" (default: {field.default})" if field.default is not None else ""
        if field.annotation in (bool, bool | None):
            parser.add_argument(flag, action="store_true", default=None, help=field.description)
        elif choices := [
            c
            for arg in (field.annotation, *get_args(field.annotation))
            if get_origin(arg) is Literal
            for c in get_args(arg)
        ]:
            parser.add_argument(flag, choices=choices, default=None, help=field.description)
        else:
            parser.add_argument(flag, default=None, help=f"{field.description}{default}")


def _training(args: argparse.Namespace) -> TrainingSettings:
    given = {
        name: value
        for name in TrainingSettings.model_fields
        if (value := getattr(args, name, None)) is not None
    }
    try:
        return TrainingSettings(**given)
    except ValidationError as exc:
        raise setting_error(exc) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emoverse", description="Emotion-conditioned poetry from Project Gutenberg."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = argparse.ArgumentParser(add_help=False)
    data.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where runs write (default: $EMOVERSE_DATA_DIR or ./data/run)",
    )
    books = argparse.ArgumentParser(add_help=False)
    books.add_argument(
        "--mirror",
        default=None,
        help="Gutenberg mirror: a URL or a folder in cache/epub/<id>/pg<id>.txt layout "
        "(default: $EMOVERSE_GUTENBERG_MIRROR or the Project Gutenberg site)",
    )
    books.add_argument(
        "--ids",
        default=None,
        help="comma-separated Gutenberg ids (default: the curated list in data/curated_ids.txt)",
    )
    books.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help="Gutenberg catalog CSV (pg_catalog.csv format): without --ids, ingest its English "
        "poetry books; it also supplies titles and authors",
    )
    books.add_argument(
        "--max-parallel",
        type=_bounded(1, 16, "--max-parallel"),
        default=2,
        help="downloads at a time (default: %(default)s, polite to the mirror)",
    )
    training = argparse.ArgumentParser(add_help=False)
    _add_training_flags(training)
    training.add_argument(
        "--mode",
        choices=TRAIN_MODES,
        default="family",
        help="train the family (the neutral base and eight children), the conditional model "
        "(one model for every emotion, told which by a control token), or both "
        "(default: %(default)s)",
    )

    sub.add_parser("run", parents=[data, books, training], help="the whole pipeline")
    ingest = sub.add_parser(
        "ingest", parents=[data, books], help="fetch books and split them into poems"
    )
    ingest.add_argument("--report", action="store_true", help="print poems and rejects per book")
    tag = sub.add_parser("tag", parents=[data], help="tag poems into nine emotion partitions")
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
        help="look words up by their noun lemma ('tears' as 'tear'), as NRCLex's "
        "load_raw_text does",
    )
    tag.add_argument(
        "--negation",
        action="store_true",
        help="a hit up to three words after a negator on its line ('not happy') does not count",
    )
    tag.add_argument(
        "--workers",
        type=_bounded(1, 256, "--workers"),
        default=None,
        help="processes for corpora of 1M+ lines (default: one per CPU)",
    )
    sub.add_parser("train", parents=[data, training], help="train the base and the children")
    gen = sub.add_parser("generate", parents=[data], help="write a poem with an emotion's model")
    which = gen.add_mutually_exclusive_group(required=True)
    which.add_argument("--emotion", help=f"one of: {', '.join(LABELS)}")
    which.add_argument(
        "--blend",
        type=_blend,
        metavar="EMOTION=WEIGHT[,...]",
        help="mix up to three emotions, each weight 0 to 3: base + sum of weight x (child - "
        "base), e.g. joy=0.7,fear=0.5",
    )
    gen.add_argument(
        "--strength",
        type=_generation_bound("strength", "--strength", integer=False),
        default=None,
        help="dial the --emotion: 0 is the neutral base it was trained from, 1 the emotion's "
        "own model (the default), up to 3 past it; fluent up to about 2",
    )
    gen.add_argument(
        "--model",
        choices=("family", "conditional", "best"),
        default="family",
        help="family: the emotion's own model (default); conditional: the one model for every "
        "emotion, told it by a control token; best: whichever of the two the registry records "
        "as better for the emotion",
    )
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
        "serve", parents=[data], help="serve the models over HTTP, with a page at /"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback)"
    )
    serve.add_argument("--port", type=_bounded(1, 65535, "--port"), default=8000)
    from apps.batcher import BatchSettings  # no torch: cheap

    batching = BatchSettings()
    serve.add_argument(
        "--batch-window-ms",
        type=_bounded(0, 1000, "--batch-window-ms", integer=False),
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
        type=_bounded(0.1, 3600, "--request-timeout", integer=False),
        default=batching.timeout_s,
        help="seconds a request may take, queue included; then a 504 (default: %(default)s)",
    )
    models = sub.add_parser("models", parents=[data], help="what the model registry holds")
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
    change.add_argument(
        "--relink",
        action="store_true",
        help="after moving or copying the data dir: point the registry's stored MLflow "
        "locations at this data dir (any writing command does it too)",
    )
    report = sub.add_parser(
        "report",
        parents=[data],
        help="write the family report: does each child carry its emotion? (markdown, figures)",
    )
    report.add_argument(
        "--out", type=Path, default=None, help="folder for report.md (default: <data-dir>/report)"
    )
    report.add_argument(
        "--dial",
        action="store_true",
        help="add the dial: each emotion at strengths 0 to 3, fidelity and fluency (samples "
        "6 x --dial-samples poems per emotion)",
    )
    report.add_argument(
        "--dial-samples",
        type=_bounded(4, 1024, "--dial-samples"),
        default=32,
        help="poems per strength for --dial (default: %(default)s)",
    )
    report.add_argument(
        "--dial-emotions",
        default=None,
        metavar="EMOTION[,...]",
        help="only these emotions for --dial (default: every emotion with a model)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_environment()
    try:
        return _dispatch(args)
    except EmoverseError as exc:
        print(f"emoverse: error: {_worded(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("emoverse: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    paths = RunPaths.at(args.data_dir)
    if paths.data_dir.exists() and not paths.data_dir.is_dir():
        raise EmoverseError(f"data dir {paths.data_dir} is a file, not a folder")
    data_dir = paths.data_dir.resolve()
    if args.command == "generate":
        return _generate(args, data_dir)
    if args.command == "serve":
        return _serve(args, data_dir)
    if args.command == "models":
        return _models(args, data_dir)
    if args.command == "report":
        return _report(args, paths)
    if args.command == "tag" and args.report:  # reads the manifest: no flow, no server
        from emoverse.tagging import tag_report

        print(tag_report(paths.partitions))
        return 0

    # Check every input before a flow starts: bad input costs no server start.
    if args.command in ("run", "ingest"):
        mirror, ids, catalog = _books(args)
    if args.command in ("run", "train"):
        settings = _training(args)

    from flows.corpus import ingest, tag
    from flows.pipeline import pipeline
    from flows.training import train_by_mode

    _hide_tracebacks_of_user_errors()
    data = str(data_dir)
    try:
        if args.command == "ingest":
            result = ingest(data, mirror, ids, _str(catalog), args.max_parallel)
            _print_ingest(result)
            if args.report:
                from emoverse.corpus import ingest_report

                print(ingest_report(Path(result["path"]).parent))
        elif args.command == "tag":
            _print_counts(
                tag(
                    data,
                    min_hits=args.min_hits,
                    min_margin=args.min_margin,
                    lemmatize=args.lemmatize,
                    negation=args.negation,
                    workers=args.workers,
                )
            )
        elif args.command == "train":
            _print_training(train_by_mode(data, settings, args.mode))
        else:
            result = pipeline(
                data, mirror, ids, _str(catalog), args.max_parallel, settings, args.mode
            )
            _print_ingest(result["ingest"])
            _print_counts(result["partitions"])
            _print_training(result)
    except EmoverseError:
        raise
    except RuntimeError as exc:  # a stage failed; Prefect has logged the details above
        print(f"emoverse: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _books(args: argparse.Namespace) -> tuple[str, list[int], Path | None]:
    """The mirror, the ids and the catalog of `run` and `ingest`, checked."""
    from emoverse.corpus import check_mirror, poetry_ids_from_catalog

    mirror = args.mirror or env.mirror()
    catalog = args.catalog
    if catalog is not None and not catalog.is_file():
        raise EmoverseError(f"catalog file {catalog} does not exist")
    if args.ids:
        ids = parse_ids(args.ids)
    elif catalog is not None:
        ids = poetry_ids_from_catalog(catalog)
    else:
        ids = env.curated_ids()
    check_mirror(mirror)
    return mirror, ids, catalog


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
        print(f"{model_name(emotion)} v{version} ({role}): {result['promotion'][emotion]}")
    for emotion, reason in result["skipped"].items():
        print(f"skipped {emotion}: {reason}")


def _generate(args: argparse.Namespace, data_dir: Path) -> int:
    emotion = check_label(args.emotion) if args.emotion else None
    from models.generation.generate import GenerationRequest, PoemGenerator
    from models.registry.model_registry import ModelRegistry

    options = (
        *("prompt", "n", "seed", "max_new_tokens"),
        *("temperature", "top_k", "top_p", "no_repeat_ngram_size"),
    )
    request = GenerationRequest.from_options(**{name: getattr(args, name) for name in options})
    request.validate()  # before a merge, so bad options never cost one
    local = not os.environ.get("MLFLOW_TRACKING_URI")
    if local and data_dir.is_dir() and not RunPaths(data_dir).registry_db.is_file():
        raise EmoverseError(  # a reader creates no registry
            f"no {emotion or 'blended'} model with alias 'champion': no model registry under "
            f"{data_dir}; run `emoverse run` first"
        )
    if args.model != "family" and (args.blend is not None or args.strength is not None):
        raise EmoverseError(
            f"--model {args.model} writes one --emotion's poems as they are; --strength and "
            "--blend dial the family's children (use --model family)"
        )
    registry = ModelRegistry.for_data_dir(data_dir, read_only=True)
    weights = _dial_weights(emotion, args.blend, args.strength)
    if weights is None:  # one model, its weights checked against the registry
        from models.generation.choice import choose_model

        choice = choose_model(registry, emotion, args.model)
        record, request = choice.record, replace(request, control=choice.control)
        warnings = [choice.warning] if choice.warning else []
        folder, files, names = record.path, record.weights, choice.describe(emotion)
        if args.model == "best":
            print(f"# best for {emotion}: {choice.reason}", file=sys.stderr)
    else:
        from models.generation.blend import dial_warning, materialize, resolve_recipe

        recipe = resolve_recipe(registry, weights)
        warnings = [*recipe.warnings, *filter(None, [dial_warning(weights)])]
        folder, names = materialize(recipe, RunPaths(data_dir).blends), recipe.describe()
        files = None
    for warning in warnings:
        print(f"emoverse: warning: {warning}", file=sys.stderr)
    poems = PoemGenerator(folder, files).generate(request)
    print(f"# {names}, seed {args.seed}", file=sys.stderr)
    print("\n\n---\n\n".join(poems))
    return 0


def _worded(error: EmoverseError) -> str:
    """The error's one line, a setting named by its flag rather than its field (the library
    and the flows name fields: that is what the UI's run form and the HTTP API show)."""
    if not isinstance(error, SettingError) or "." in error.setting:
        return str(error)
    flag = "-n" if error.setting == "n" else "--" + error.setting.replace("_", "-")
    return f"{flag} {error.problem}"


def _dial_weights(
    emotion: str | None, blend: dict[str, float] | None, strength: float | None
) -> dict[str, float] | None:
    """The recipe's weights, or None for the emotion's own model (no --strength, no
    --blend)."""
    from emoverse.emotions import EMOTIONS

    if blend is not None:
        if strength is not None:
            raise EmoverseError(
                "--strength scales one --emotion; give each weight in --blend instead"
            )
        return blend
    if strength is None or strength == 1:
        return None  # strength 1 is the emotion's own model (as in POST /generate)
    if emotion not in EMOTIONS:
        raise EmoverseError(
            f"--strength dials one of the eight emotions, not {emotion} (the base itself)"
        )
    return {emotion: strength}


def _serve(args: argparse.Namespace, data_dir: Path) -> int:
    from apps.batcher import BatchSettings
    from apps.serve import serve

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
    from models.registry.model_registry import ModelRegistry

    writes = args.promote is not None or args.rollback
    if writes and emotion is None:
        raise EmoverseError("--promote and --rollback need --emotion")
    if args.relink:
        return _relink(data_dir)
    if not writes and not os.environ.get("MLFLOW_TRACKING_URI"):
        if not data_dir.is_dir():
            raise EmoverseError(f"data dir {data_dir} does not exist; run `emoverse run` first")
        if not RunPaths(data_dir).registry_db.is_file():
            print(f"the registry under {data_dir} holds no models yet")
            return 0
    registry = ModelRegistry.for_data_dir(data_dir, read_only=not writes)
    if writes:
        assert emotion is not None
        if args.promote is not None and registry.champion_version(emotion) == args.promote:
            print(f"{model_name(emotion)} v{args.promote} is already the champion; nothing changed")
            return 0
        record = (
            registry.promote(emotion, args.promote)
            if args.promote is not None
            else registry.rollback(emotion)
        )
        print(f"{model_name(emotion)} champion is now v{record.version} ({record.path})")
        return 0
    from emoverse.judgements import JudgementStore

    records = registry.list(emotion)
    human = JudgementStore(RunPaths(data_dir).judgements_db).accuracy()
    if args.json:
        listed = []
        for r in records:
            share = human.get((r.emotion, r.version))
            listed.append({**r.to_dict(), "human_accuracy": share.to_dict() if share else None})
        print(json.dumps(listed, indent=2))
        return 0
    if not records:
        print(f"the registry under {data_dir} holds no models yet")
        return 0
    print(
        f"{'emotion':<13}{'version':>7}  {'aliases':<9}{'family':<22}{'fidelity NRC':<26}"
        f"{'fidelity Empath':<26}{'human':<26}"
    )
    for r in records:
        stored = r.metrics.get("evaluation")
        evaluation = Evaluation.from_dict(stored) if stored else None
        shares = [
            str(evaluation.fidelity_of(judge)) if evaluation and evaluation.n_samples else "-"
            for judge in JUDGES
        ]
        family = r.parent if r.emotion != "neutral" else f"base of v{r.version}'s family"
        human_share = human.get((r.emotion, r.version))
        print(
            f"{r.emotion:<13}{r.version:>7}  {','.join(r.aliases) or '-':<9}{family:<22}"
            f"{shares[0]:<26}{shares[1]:<26}{str(human_share) if human_share else '-':<26}"
        )
        if r.promotion:
            print(f"{'':<22}{r.promotion}")
    print(
        "shares: fidelity [95% Wilson interval] of n sampled poems (human: of n readers' "
        "guesses); `emoverse report` explains them"
    )
    return 0


def _relink(data_dir: Path) -> int:
    from models.registry.model_registry import ModelRegistry

    if os.environ.get("MLFLOW_TRACKING_URI"):
        raise EmoverseError(
            "--relink is for the sqlite registry under a data dir; unset MLFLOW_TRACKING_URI"
        )
    if not RunPaths(data_dir).registry_db.is_file():
        raise EmoverseError(f"no model registry under {data_dir}; nothing to relink")
    registry = ModelRegistry.for_data_dir(data_dir)  # a writer relinks on opening
    if registry.relinked is None:
        print(f"the registry's locations already name {data_dir}; nothing changed")
    else:
        old, count = registry.relinked
        print(f"relinked {count} stored locations from {old} to {registry.data_dir}")
    return 0


def _report(args: argparse.Namespace, paths: RunPaths) -> int:
    from emoverse.judgements import JudgementStore
    from models.registry.model_registry import ModelRegistry
    from models.reports.family import write_family_report

    if not paths.data_dir.is_dir():
        raise EmoverseError(f"data dir {paths.data_dir} does not exist; run `emoverse run` first")
    registry = ModelRegistry.for_data_dir(paths.data_dir)
    dial, skipped = None, None
    if args.dial:
        from models.reports.family import measure_family_dial

        emotions = None
        if args.dial_emotions:
            emotions = [check_label(e.strip()) for e in args.dial_emotions.split(",")]
        dial, skipped = measure_family_dial(
            registry, paths.partitions, paths.blends, emotions=emotions, samples=args.dial_samples
        )
    report = write_family_report(
        registry,
        JudgementStore(paths.judgements_db),
        paths.partitions,
        args.out or paths.report,
        dial=dial,
        dial_skipped=skipped,
    )
    print(report)
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
