"""`emoverse`: run the pipeline or one stage, generate a poem, list the registry.

Input is checked here, before any flow starts, so bad input costs no server start and
prints one line naming the problem.
"""

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
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
TERMINATE_GRACE_S = 5.0  # after SIGTERM: Prefect records the flow run as crashed
SERVER_START_S = 120  # the longest the temporary Prefect server may take to start


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
    judgements = sub.add_parser(
        "judgements", parents=[data], help="the readers of the judging page and their answers"
    )
    judgements.add_argument(
        "--discard-reader",
        metavar="READER",
        default=None,
        help="delete every answer of READER (an id this command lists) and record the "
        "figures without them",
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
    if args.command == "judgements":
        return _judgements(args, data_dir)
    if args.command == "tag" and args.report:  # reads the manifest: no flow, no server
        from emoverse.tagging import tag_report

        print(tag_report(paths.partitions))
        return 0

    # Check every input before a flow starts: bad input costs no server start.
    mirror, ids, catalog, settings = None, None, None, None
    if args.command in ("run", "ingest"):
        mirror, ids, catalog = _books(args)
    if args.command in ("run", "train"):
        settings = _training(args)

    from emoverse.runlock import data_dir_lock

    def waiting(line: str) -> None:
        print(f"emoverse: {line}", file=sys.stderr, flush=True)

    with _terminate_promptly(), data_dir_lock(data_dir, on_wait=waiting):
        return _run_flows(args, data_dir, mirror, ids, catalog, settings)


def _run_flows(
    args: argparse.Namespace,
    data_dir: Path,
    mirror: str | None,
    ids: list[int] | None,
    catalog: Path | None,
    settings: TrainingSettings | None,
) -> int:
    """The flow commands, under the data dir's lock."""
    try:
        _start_prefect_server()
    except RuntimeError as exc:  # Prefect's own words: it did not answer in time
        print(f"emoverse: failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
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


def _start_prefect_server() -> None:
    """Start the temporary Prefect server (when no PREFECT_API_URL names one) one process at
    a time: two starting together race on the shared Prefect database's migrations."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )

    if PREFECT_API_URL.value():
        return
    from filelock import FileLock
    from prefect.server.api.server import SubprocessASGIServer

    home = Path(PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(str(home / "emoverse-server-start.lock")):
        # A first start migrates a new database: on a busy machine that outlasts Prefect's
        # 20 s default.
        wait = max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), SERVER_START_S)
        SubprocessASGIServer().start(timeout=wait)


@contextlib.contextmanager
def _terminate_promptly() -> Iterator[None]:
    """SIGTERM ends the process within TERMINATE_GRACE_S. Inside a flow Prefect's own
    handler turns it into a crash of the run, and would then wait for every worker thread (a
    download dripping for minutes, a training); a watcher thread, woken by the signal itself
    (`signal.set_wakeup_fd`, whoever's handler runs), gives Prefect the grace to record the
    crash and then ends the process. Every write is atomic, so stopping here keeps what
    SIGKILL keeps: whole files, one registry transaction or none, the data dir's lock
    released."""
    import signal
    import socket
    import threading
    import time

    def finish(signum: int) -> None:
        print("emoverse: terminated", file=sys.stderr, flush=True)
        try:
            from prefect.server.api.server import SubprocessASGIServer

            SubprocessASGIServer().stop()  # atexit hooks do not run after os._exit
        except Exception:
            pass
        os._exit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: finish(signum))
    except ValueError:  # not the main thread (an embedding program's): its own handling
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            try:
                woken = reader.recv(64)
            except OSError:
                return
            if not woken:
                return
            if signal.SIGTERM in woken:
                time.sleep(TERMINATE_GRACE_S)
                finish(signal.SIGTERM)

    threading.Thread(target=watch, name="emoverse-sigterm", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGTERM, previous)
        writer.close()
        reader.close()


def _books(args: argparse.Namespace) -> tuple[str, list[int], Path | None]:
    """The mirror, the ids and the catalog of `run` and `ingest`, checked."""
    from emoverse.corpus import check_mirror, poetry_ids_from_catalog

    mirror = args.mirror or env.mirror()
    catalog = args.catalog
    if catalog is not None and not catalog.is_file():
        raise EmoverseError(f"catalog file {catalog} does not exist")
    if args.ids is not None:  # given, even empty: `--ids ""` is no ids, not the default list
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
    # Imported here: they load torch, which listing the models or a bad flag need not wait for.
    from apps.requests import FLAGS, OPTIONS, resolve
    from models.generation.generate import PoemGenerator
    from models.registry.model_registry import ModelRegistry

    wanted = resolve(  # before a merge, so bad options never cost one
        emotion=args.emotion,
        model=args.model,
        strength=args.strength,
        blend=args.blend,
        options={name: getattr(args, name) for name in OPTIONS},
        names=FLAGS,
    )
    emotion, request = wanted.emotion, wanted.request
    local = not os.environ.get("MLFLOW_TRACKING_URI")
    if local and data_dir.is_dir() and not RunPaths(data_dir).registry_db.is_file():
        raise EmoverseError(  # a reader creates no registry
            f"no {emotion or 'blended'} model with alias 'champion': no model registry under "
            f"{data_dir}; run `emoverse run` first"
        )
    registry = ModelRegistry.for_data_dir(data_dir, read_only=True)
    if wanted.weights is None:  # one model, its weights checked against the registry
        from models.generation.choice import choose_model

        choice = choose_model(registry, emotion, args.model)
        record, request = choice.record, replace(request, control=choice.control)
        warnings = [choice.warning] if choice.warning else []
        folder, files, names = record.path, record.weights, choice.describe(emotion)
        if args.model == "best":
            print(f"# best for {emotion}: {choice.reason}", file=sys.stderr)
    else:
        from models.generation.blend import materialize, resolve_recipe

        recipe = resolve_recipe(registry, wanted.weights)
        warnings = [*recipe.warnings, *filter(None, [wanted.dial_warning])]
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


def _serve(args: argparse.Namespace, data_dir: Path) -> int:
    from apps.batcher import BatchSettings
    from apps.server import serve

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
    registry = ModelRegistry.for_data_dir(data_dir, read_only=True)  # creates nothing
    if writes:
        assert emotion is not None
        if args.promote is not None and registry.champion_version(emotion) == args.promote:
            print(f"{model_name(emotion)} v{args.promote} is already the champion; nothing changed")
            return 0
        registry = ModelRegistry.for_data_dir(data_dir)  # it exists: now as its writer
        if args.promote is not None:
            record = registry.promote(emotion, args.promote)
        elif (record := registry.rollback(emotion)) is None:
            print(
                f"{model_name(emotion)} has no champion again, as before the promotion; "
                "`generate` uses its newest version, with a warning"
            )
            return 0
        print(f"{model_name(emotion)} champion is now v{record.version} ({record.path})")
        return 0
    from emoverse.judgements import JudgementStore, accuracy_or_warning

    records = registry.list(emotion)
    human, readers, unreadable = accuracy_or_warning(
        JudgementStore(RunPaths(data_dir).judgements_db)
    )
    if unreadable:
        print(f"emoverse: warning: {unreadable}", file=sys.stderr)
    damage = _damaged(records)
    for r in records:
        if r.version in damage.get(r.emotion, {}):
            role = " (champion)" if "champion" in r.aliases else ""
            print(
                f"emoverse: warning: {model_name(r.emotion)} v{r.version}{role}: "
                f"{damage[r.emotion][r.version]}",
                file=sys.stderr,
            )
    if args.json:
        listed = []
        for r in records:
            share = human.get((r.emotion, r.version))
            problem = damage.get(r.emotion, {}).get(r.version)
            listed.append(
                {
                    **r.to_dict(),
                    "human_accuracy": share.to_dict() if share else None,
                    "human_readers": readers.get((r.emotion, r.version), 0),
                    "damaged": problem,
                }
            )
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
        n_readers = readers.get((r.emotion, r.version), 0)
        human_text = f"{human_share} by {n_readers}" if human_share else "-"
        aliases = ",".join(r.aliases) or "-"
        if r.version in damage.get(r.emotion, {}):
            aliases += ",DAMAGED"
        print(
            f"{r.emotion:<13}{r.version:>7}  {aliases:<9}{family:<22}"
            f"{shares[0]:<26}{shares[1]:<26}{human_text}"
        )
        if r.promotion:
            print(f"{'':<22}{r.promotion}")
    print(
        "shares: fidelity [95% Wilson interval] of n sampled poems (human: of n guesses, by "
        "so many readers); `emoverse report` explains them"
    )
    return 0


def _judgements(args: argparse.Namespace, data_dir: Path) -> int:
    """List the readers, most answers first, or discard one reader's answers (the registry's
    copies of the figures recorded again)."""
    from datetime import UTC, datetime

    from emoverse.judgements import JudgementStore

    store = JudgementStore(RunPaths(data_dir).judgements_db)
    if args.discard_reader is None:
        readers = store.reader_summary()
        if not readers:
            print(f"no reader has judged a poem under {data_dir}")
            return 0
        print(f"{'reader':<18}{'answers':>8}{'right':>7}{'addresses':>10}  last answer")
        for r in readers:
            last = datetime.fromtimestamp(int(r["last_ms"]) / 1000, UTC)  # type: ignore[arg-type]
            print(
                f"{r['reader']!s:<18}{r['answers']:>8}{r['right']:>7}{r['addresses']:>10}  "
                f"{last:%Y-%m-%d %H:%M} UTC"
            )
        return 0
    touched = store.discard_reader(args.discard_reader)
    if not touched:
        raise EmoverseError(
            f"reader {args.discard_reader!r} has no answers under {data_dir}; "
            "`emoverse judgements` lists the readers"
        )
    if RunPaths(data_dir).registry_db.is_file() or os.environ.get("MLFLOW_TRACKING_URI"):
        from emoverse.stats import Share
        from models.registry.model_registry import ModelRegistry

        registry = ModelRegistry.for_data_dir(data_dir)
        accuracy = store.accuracy()
        for emotion, version in touched:
            share = accuracy.get((emotion, version), Share.of(0, 0))
            registry.record_human_accuracy(emotion, version, share)
    shown = ", ".join(f"{model_name(e)} v{v}" for e, v in touched)
    print(f"discarded the answers of reader {args.discard_reader}; figures changed: {shown}")
    return 0


def _damaged(records: list) -> dict[str, dict[int, str]]:
    """emotion -> version -> what is wrong with its folder: the checks generation makes
    before loading one (the folder there, every recorded file of its recorded size and
    sha256, no pickle beside the safetensors)."""
    if not records:
        return {}
    from models.folders.model_folder import verify_weights
    from models.generation.generate import check_safetensors_only

    found: dict[str, dict[int, str]] = {}
    for r in records:
        folder = Path(r.path)
        try:
            if not folder.is_dir():
                raise EmoverseError(
                    f"model folder {folder} is missing; `emoverse run` re-trains it"
                )
            check_safetensors_only(folder)
            verify_weights(folder, r.weights)
        except EmoverseError as exc:
            found.setdefault(r.emotion, {})[r.version] = str(exc)
    return found


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
    out = args.out or paths.report
    for folder in (out, *out.parents):  # the report is a folder: no file on its way
        if folder.exists() and not folder.is_dir():
            raise EmoverseError(
                f"--out {out}: {folder} is a file; --out names the folder report.md goes in"
            )
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
        out,
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
