"""`main`: parse the command line, run the command, and word what went wrong as one line."""

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from apps.cli import generate, judge, judgements, pipeline, registry, report, serve
from apps.cli.parser import build_parser
from emoverse.errors import EmoverseError, SettingError
from emoverse.paths import RunPaths

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


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
    if args.command == "judge":  # no data dir: the judges ship in their packages
        return judge.judge(args)
    paths = RunPaths.at(args.data_dir)
    if paths.data_dir.exists() and not paths.data_dir.is_dir():
        raise EmoverseError(f"data dir {paths.data_dir} is a file, not a folder")
    data_dir = paths.data_dir.resolve()
    if args.command == "generate":
        return generate.generate(args, data_dir)
    if args.command == "serve":
        return serve.serve(args, data_dir)
    if args.command == "models":
        return registry.models(args, data_dir)
    if args.command == "report":
        return report.report(args, paths)
    if args.command == "judgements":
        return judgements.judgements(args, data_dir)
    if pipeline.run_stage(args, paths, data_dir):
        return 0
    return EXIT_FAILED


def _worded(error: EmoverseError) -> str:
    """The error's one line, a setting named by its flag rather than its field (the library
    and the flows name fields: that is what the UI's run form and the HTTP API show)."""
    if not isinstance(error, SettingError) or "." in error.setting:
        return str(error)
    flag = "-n" if error.setting == "n" else "--" + error.setting.replace("_", "-")
    return f"{flag} {error.problem}"


def _quiet_environment() -> None:
    # Offline machines cannot reach Prefect's telemetry endpoint; do not make every run try.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's temporary server gets 20 s to start by default; a busy two-core machine needs
    # more. Read when Prefect is imported (inside the commands), so set before; a value the
    # user set is kept.
    os.environ.setdefault(pipeline.STARTUP_TIMEOUT_SETTING, str(pipeline.STARTUP_TIMEOUT_S))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
