"""`emoverse judgements`: the readers of the judging page, and --discard-reader to take one
reader's answers out (the rules they met are emoverse/judgements.py's)."""

import argparse
from pathlib import Path

from emoverse import settings
from emoverse.emotions import model_name
from emoverse.errors import EmoverseError
from emoverse.paths import RunPaths


def judgements(args: argparse.Namespace, data_dir: Path) -> int:
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
    if RunPaths(data_dir).registry_db.is_file() or settings.tracking_uri():
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
