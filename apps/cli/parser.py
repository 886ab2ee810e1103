"""The `emoverse` command line: one small builder per subcommand, flags checked as they parse.

Bounds are checked here, so a flag out of range is argparse's one line and exit code 2
before anything runs; the rules between flags (`--strength` with `--blend`, ...) are
apps/requests.py's, checked when the command runs. Parents shared by several subcommands:
`--data-dir` (every one), the books (`run`, `ingest`) and the training settings (`run`,
`train`: one flag per `TrainingSettings` field).
"""

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args, get_origin

from apps.batcher import BatchSettings  # no torch: cheap
from emoverse.emotions import LABELS
from emoverse.errors import GenerationSettingError
from models.config import TEMPERATURE, TOP_P, TRAIN_MODES, TrainingSettings

Subparsers = argparse._SubParsersAction  # what add_subparsers returns


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


def _bounded(lo: float, hi: float, flag: str, *, integer: bool = True) -> Callable[[str], float]:
    return lambda text: _check(text, lo, hi, flag, integer=integer)


def _generation_bound(option: str, flag: str, *, integer: bool = True) -> Callable[[str], float]:
    """A parser checking `flag` against the bounds `models.generation.generate` enforces for
    `option` (its BOUNDS table), imported when a flag is parsed: listing models need not import
    torch."""

    def parse(text: str) -> float:
        from models.generation.generate import BOUNDS

        return _check(text, *BOUNDS[option], flag, integer=integer)

    return parse


def _blend(text: str) -> dict[str, float]:
    """`--blend joy=0.7,fear=0.5`, checked by `models.generation.blend` (imported when parsed:
    it loads the registry's MLflow client)."""
    from models.generation.blend import parse_blend

    try:
        return parse_blend(text)
    except GenerationSettingError as exc:
        raise argparse.ArgumentTypeError(f"--blend {exc.problem}") from None


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainingSettings field (`--base-epochs` for base_epochs), its help the
    field's description; values are checked by TrainingSettings itself (`training_settings`)."""
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emoverse", description="Emotion-conditioned poetry from Project Gutenberg."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data, books, training = _data_parent(), _books_parent(), _training_parent()
    sub.add_parser("run", parents=[data, books, training], help="the whole pipeline")
    _add_ingest(sub, data, books)
    _add_tag(sub, data)
    sub.add_parser("train", parents=[data, training], help="train the base and the children")
    _add_generate(sub, data)
    _add_serve(sub, data)
    _add_models(sub, data)
    _add_judge(sub)
    _add_judgements(sub, data)
    _add_report(sub, data)
    return parser


def _data_parent() -> argparse.ArgumentParser:
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where runs write (default: $EMOVERSE_DATA_DIR or ./data/run)",
    )
    return data


def _books_parent() -> argparse.ArgumentParser:
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
    return books


def _training_parent() -> argparse.ArgumentParser:
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
    return training


def _add_ingest(
    sub: Subparsers, data: argparse.ArgumentParser, books: argparse.ArgumentParser
) -> None:
    ingest = sub.add_parser(
        "ingest", parents=[data, books], help="fetch books and split them into poems"
    )
    ingest.add_argument("--report", action="store_true", help="print poems and rejects per book")


def _add_tag(sub: Subparsers, data: argparse.ArgumentParser) -> None:
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


def _add_generate(sub: Subparsers, data: argparse.ArgumentParser) -> None:
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
        choices=("family", "conditional", "best"),  # models.generation.choice's
        default="family",
        help="family: the emotion's own model (default); conditional: the one model for every "
        "emotion, told it by a control token; best: whichever of the two the registry records "
        "as better for the emotion",
    )
    _add_sampling_flags(gen)


def _add_sampling_flags(gen: argparse.ArgumentParser) -> None:
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
        default=TEMPERATURE,
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
        default=TOP_P,
        help="sample within this share of probability; 1 turns it off (default: %(default)s)",
    )
    gen.add_argument(
        "--no-repeat-ngram-size",
        type=_generation_bound("no_repeat_ngram_size", "--no-repeat-ngram-size"),
        default=3,
        help="never repeat an n-gram of this size; 0 allows repeats (default: %(default)s)",
    )
    gen.add_argument(
        "--lines",
        type=_generation_bound("lines", "--lines"),
        default=None,
        help="exactly this many lines (each needs 8 of --max-new-tokens)",
    )
    gen.add_argument(
        "--stanzas",
        type=_generation_bound("stanzas", "--stanzas"),
        default=None,
        help="split the --lines evenly into this many stanzas, a blank line between",
    )
    gen.add_argument(
        "--rhyme",
        default=None,
        metavar="SCHEME",
        help="rhyme scheme over the --lines, e.g. AABB, ABAB, ABBA, AAAA (repeated with fresh "
        "rhymes when shorter than the poem), or none",
    )


def _add_serve(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    serve = sub.add_parser(
        "serve", parents=[data], help="serve the models over HTTP, with a page at /"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback)"
    )
    serve.add_argument("--port", type=_bounded(1, 65535, "--port"), default=8000)
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


def _add_models(sub: Subparsers, data: argparse.ArgumentParser) -> None:
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


def _add_judge(sub: Subparsers) -> None:
    judge = sub.add_parser(
        "judge",
        help="judge poems you give: each judge's label, eight scores and valence per poem",
        description="Poems separated by blank lines, or JSONL (one object with a `text` field "
        "per line), judged by NRC, Empath and NADE.",
    )
    judge.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="a file, or - for stdin (default)"
    )
    judge.add_argument("--json", action="store_true", help="machine-readable output")


def _add_judgements(sub: Subparsers, data: argparse.ArgumentParser) -> None:
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


def _add_report(sub: Subparsers, data: argparse.ArgumentParser) -> None:
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
