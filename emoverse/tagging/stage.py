"""The tag stage: poems file -> a new version of the nine partitions, unless nothing changed
(its own 'already done?' key), and the report of a version."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emoverse.atomic import sha256_file
from emoverse.done import stage_key
from emoverse.emotions import LABELS
from emoverse.errors import MissingStageOutputError
from emoverse.schema import POEM_SCHEMA
from emoverse.tagging.counting import TAGGER_VERSION
from emoverse.tagging.lexicon import TOKENS_LEMMAS, TOKENS_SURFACE, load_lexicon
from emoverse.tagging.rule import SPLITS, check_rule, tag_table
from emoverse.tagging.store import (
    KEEP_VERSIONS,
    LAYOUT,
    check_partitions,
    partition_problems,
    read_manifest,
    read_partitions,
    write_version,
)


@dataclass(frozen=True)
class TagResult:
    counts: dict[str, int]  # poems per label
    version: str
    skipped: bool  # True: the current version already has this input and these options
    manifest: dict[str, Any]


def tag_poems(
    poems_file: Path,
    partitions_dir: Path,
    *,
    min_hits: int = 1,
    min_margin: int = 1,
    lemmatize: bool = False,
    negation: bool = False,
    workers: int | None = None,
    keep: int = KEEP_VERSIONS,
    force: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> TagResult:
    """Tag the poems in `poems_file` into a new version of `partitions_dir`, unless the
    current version was made from the same file with the same tagger, lexicon and options
    (then it is kept, `skipped` is True, and nothing is read or written). The new manifest
    says how many poems changed label against the version it replaces."""
    check_rule(min_hits, min_margin)
    poems_file = Path(poems_file)
    if not poems_file.is_file():
        raise MissingStageOutputError(f"no poems at {poems_file}; run `emoverse ingest` first")
    options = {
        "min_hits": min_hits,
        "min_margin": min_margin,
        "lemmatize": lemmatize,
        "negation": negation,
    }
    input_sha = sha256_file(poems_file)
    fingerprint = stage_key(
        {
            "input": input_sha,
            "tagger": TAGGER_VERSION,
            "lexicon": load_lexicon().sha256,
            "options": options,
        }
    )
    current = read_manifest(partitions_dir)
    unchanged = not force and current is not None and current.get("fingerprint") == fingerprint
    # A damaged file in the current version: tag again into a new, whole version.
    if unchanged and not partition_problems(partitions_dir, hashes=True):
        if current.get("layout", 1) == LAYOUT:
            return TagResult(current["counts"], current["version"], True, current)
        return _relayout(partitions_dir, current, keep)

    started = time.perf_counter()
    poems = pq.read_table(poems_file).select(POEM_SCHEMA.names).cast(POEM_SCHEMA)
    tagged = tag_table(
        poems,
        min_hits=min_hits,
        min_margin=min_margin,
        lemmatize=lemmatize,
        negation=negation,
        workers=workers,
        on_progress=on_progress,
    )
    elapsed = time.perf_counter() - started
    changes = label_changes(partitions_dir, tagged) if current is not None else None
    n_lines = int(pc.sum(poems.column("n_lines")).as_py() or 0)
    manifest = write_version(
        tagged,
        partitions_dir,
        keep=keep,
        info={
            "fingerprint": fingerprint,
            "options": options,
            "tokens": TOKENS_LEMMAS if lemmatize else TOKENS_SURFACE,
            "input": {"file": str(poems_file), "sha256": input_sha, "poems": poems.num_rows},
            "lines": n_lines,
            "n_tokens": int(pc.sum(tagged.column("n_tokens")).as_py() or 0),
            "tag_seconds": round(elapsed, 3),
            "label_changes": changes,
        },
    )
    return TagResult(manifest["counts"], manifest["version"], False, manifest)


# What write_version works out itself; the rest of a manifest describes how rows were tagged.
_DERIVED = {"version", "created", "rows", "counts", "splits", "files", "digests", "layout"}


def _relayout(partitions_dir: Path, current: dict[str, Any], keep: int) -> TagResult:
    """The current version's own rows, written again as a new version in today's layout (with
    its dataset card): same labels, same key, nothing counted again."""
    tagged = read_partitions(partitions_dir)
    info = {k: v for k, v in current.items() if k not in _DERIVED}
    info["label_changes"] = label_changes(partitions_dir, tagged)
    manifest = write_version(tagged, partitions_dir, keep=keep, info=info)
    return TagResult(manifest["counts"], manifest["version"], False, manifest)


def label_changes(partitions_dir: Path, tagged: pa.Table) -> dict[str, Any] | None:
    """How the labels of `tagged` differ from the current version's, poem by poem: the
    version compared with, poems in both, how many changed, and the most common moves."""
    manifest = read_manifest(partitions_dir)
    if manifest is None:
        return None
    before: dict[str, str] = {}
    for label in LABELS:
        try:
            old = pq.read_table(
                Path(partitions_dir) / f"emotion={label}", columns=["poem_id"]
            ).column("poem_id")
        except (OSError, pa.ArrowInvalid):
            return None  # an unreadable old version: nothing to compare with
        before.update(dict.fromkeys(old.to_pylist(), label))
    moves: dict[str, int] = {}
    compared = changed = 0
    for poem_id, label in zip(
        tagged.column("poem_id").to_pylist(), tagged.column("label").to_pylist(), strict=True
    ):
        old_label = before.get(poem_id)
        if old_label is None:
            continue
        compared += 1
        if old_label != label:
            changed += 1
            move = f"{old_label}->{label}"
            moves[move] = moves.get(move, 0) + 1
    top = dict(sorted(moves.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
    return {"against": manifest["version"], "compared": compared, "changed": changed, "moves": top}


def tag_report(partitions_dir: Path) -> str:
    """The current version's label distribution per split, from its manifest."""
    manifest = read_manifest(partitions_dir)
    if manifest is None:
        raise MissingStageOutputError(
            f"no tagged partitions at {partitions_dir}; run `emoverse tag` first"
        )
    check_partitions(partitions_dir)  # a report must not vouch for a damaged file
    counts, splits = manifest["counts"], manifest["splits"]
    total = sum(counts.values())
    options = manifest.get("options", {})
    lines = [
        f"partitions {manifest['version']} ({manifest.get('created', '?')}): {total} poems, "
        f"tagger {manifest['tagger_version']}, {manifest.get('tokens', TOKENS_SURFACE)} tokens, "
        f"min_hits {options.get('min_hits', 1)}, min_margin {options.get('min_margin', 1)}, "
        f"negation {'on' if options.get('negation') else 'off'}",
        f"lexicon sha256 {manifest['lexicon']['sha256'][:16]}",
        "",
        f"{'label':<13}{'poems':>8}{'share':>8}" + "".join(f"{s:>12}" for s in SPLITS),
    ]
    for label in LABELS:
        share = counts[label] / total if total else 0.0
        lines.append(
            f"{label:<13}{counts[label]:>8}{share:>8.1%}"
            + "".join(f"{splits[label][s]:>12}" for s in SPLITS)
        )
    lines.append(
        f"{'total':<13}{total:>8}{1 if total else 0:>8.1%}"
        + "".join(f"{sum(splits[label][s] for label in LABELS):>12}" for s in SPLITS)
    )
    changes = manifest.get("label_changes")
    if changes:
        share = changes["changed"] / changes["compared"] if changes["compared"] else 0.0
        moves = ", ".join(f"{move} {n}" for move, n in list(changes["moves"].items())[:5])
        lines += [
            "",
            f"labels changed against {changes['against']}: {changes['changed']} of "
            f"{changes['compared']} poems ({share:.1%})" + (f"; most: {moves}" if moves else ""),
        ]
    elif "label_changes" in manifest:
        lines += ["", "labels changed: no earlier version to compare with"]
    return "\n".join(lines)
