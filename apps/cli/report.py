"""`emoverse report`: the family report (does each child carry its emotion?), with the dial
when asked."""

import argparse

from emoverse.emotions import check_label
from emoverse.errors import EmoverseError
from emoverse.judgements import JudgementStore
from emoverse.paths import RunPaths


def report(args: argparse.Namespace, paths: RunPaths) -> int:
    # MLflow and the report's libraries: see apps/cli/__init__.
    from models.registry.model_registry import ModelRegistry
    from models.reports.family import measure_family_dial, write_family_report

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
