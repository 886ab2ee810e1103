"""Versioned partitions: `<partitions>` links to `<partitions>.versions/vNNNNNN/`, which holds,
in the Hub's layout, a dataset card (`README.md`) and `_manifest.json` at the root and the
Parquet files under `data/`: `data/emotion=<label>/<split>.parquet` for all nine labels and
three splits (TAGGED_SCHEMA). So `datasets.load_dataset(<partitions>)` reads the folder as it
is, and `pandas.read_parquet(<partitions>/data)` or `pyarrow.dataset.dataset(<partitions>/data,
partitioning="hive")` read the Parquet without meeting the card. A version is written under a
temporary name, renamed when complete, and the link is then switched in one `os.replace`: a
crash at any point leaves the previous version current. Older versions still read (their
manifest lists their files), and `tag_poems` rewrites them in this layout without counting
again: layout 1 held one `part-0.parquet` per label and no card, layout 2 the label folders
beside the card at the root (where pandas and pyarrow stop at the card)."""

import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nrclex
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emoverse.atomic import sha256_file
from emoverse.emotions import LABELS
from emoverse.errors import EmoverseError, MissingStageOutputError
from emoverse.schema import TAGGED_SCHEMA
from emoverse.tagging.card import CARD_NAME, dataset_card
from emoverse.tagging.counting import TAGGER_VERSION
from emoverse.tagging.lexicon import load_lexicon
from emoverse.tagging.rule import SPLITS

MANIFEST_NAME = "_manifest.json"  # a leading "_": pyarrow's dataset discovery skips it
DATA_FOLDER = "data"  # the Parquet files, apart from the card (the Hub's own layout)
# 3: the Parquet under data/, the card at the root. Not part of the tag stage's key: a
# version in an older layout is rewritten from its own rows, not tagged again.
LAYOUT = 3
KEEP_VERSIONS = 3

_VERSION = re.compile(r"v(\d{6,})")


def versions_dir(partitions_dir: Path) -> Path:
    """Where the versions behind the `partitions_dir` link live."""
    partitions_dir = Path(partitions_dir)
    return partitions_dir.with_name(f"{partitions_dir.name}.versions")


def list_versions(partitions_dir: Path) -> list[str]:
    """The complete versions on disk, oldest first."""
    store = versions_dir(partitions_dir)
    if not store.is_dir():
        return []
    names = [p.name for p in store.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir()]
    return sorted(names, key=lambda name: int(name[1:]))


def read_manifest(partitions_dir: Path) -> dict[str, Any] | None:
    """The current version's manifest, or None before the first tagged run."""
    path = Path(partitions_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


@contextmanager
def _writer_lock(store: Path) -> Iterator[None]:
    """One writer at a time per partitions dir; the OS drops the lock if the writer dies."""
    with open(store / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def split_file(label: str, split: str) -> str:
    """A split's file, relative to the version folder: named by its split, so that `datasets`'
    default patterns find the splits even without the card (`data_dir=`)."""
    return f"{DATA_FOLDER}/emotion={label}/{split}.parquet"


def label_files(partitions_dir: Path, label: str) -> list[Path]:
    """The current version's Parquet files of one label, in whichever layout its manifest
    records (today's when there is no manifest)."""
    partitions_dir = Path(partitions_dir)
    manifest = read_manifest(partitions_dir) or {}
    files = (manifest.get("files") or {}).get(label)
    if files is None:
        return sorted((partitions_dir / DATA_FOLDER / f"emotion={label}").glob("*.parquet"))
    rels = [files] if isinstance(files, str) else list(files.values())
    return [partitions_dir / rel for rel in rels]


def _write_labels(
    tagged: pa.Table, folder: Path
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """One Parquet file per label and split (empty ones too); rows, and bytes as Arrow data
    (what `datasets` calls a split's `num_bytes`), per label and split."""
    folder.mkdir(parents=True)
    by_split: dict[str, dict[str, int]] = {}
    nbytes: dict[str, dict[str, int]] = {}
    labels = tagged.column("label")
    for label in LABELS:
        (folder / DATA_FOLDER / f"emotion={label}").mkdir(parents=True)
        rows = tagged.filter(pc.equal(labels, label))
        by_split[label], nbytes[label] = {}, {}
        for split in SPLITS:
            part = rows.filter(pc.equal(rows.column("split"), split))
            path = folder / split_file(label, split)
            if part.num_rows:
                pq.write_table(part, path)
            else:
                # Schema only, no row group: `datasets` skips such a file, while one empty row
                # group (what write_table writes) fails it ("BatchSize must be greater than 0").
                pq.ParquetWriter(path, part.schema).close()
            _fsync(path)
            by_split[label][split] = part.num_rows
            nbytes[label][split] = part.nbytes if part.num_rows else 0
    return by_split, nbytes


def _switch(link: Path, target: Path) -> None:
    """Point `link` at `target` in one rename. A real folder there (the layout before
    versions) is first moved into the store as version v000000."""
    tmp = link.with_name(f".{link.name}.link-{uuid.uuid4().hex[:8]}")
    os.symlink(os.path.relpath(target, link.parent), tmp)
    try:
        if link.is_dir() and not link.is_symlink():
            legacy = target.parent / "v000000"
            if legacy.exists():
                shutil.rmtree(legacy)
            os.replace(link, legacy)
        os.replace(tmp, link)
    finally:
        if tmp.is_symlink():
            tmp.unlink()
    _fsync(link.parent)


def _drop_leftovers(partitions_dir: Path, store: Path) -> None:
    """Remove what killed writers left: temp folders and temp links. Only under the lock,
    where no other writer is live."""
    for leftover in store.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for link in partitions_dir.parent.glob(f".{partitions_dir.name}.link-*"):
        link.unlink(missing_ok=True)


def _prune(partitions_dir: Path, store: Path, keep: int, current: str) -> None:
    versions = list_versions(partitions_dir)
    for old in versions[: max(0, len(versions) - keep)]:
        if old != current:
            shutil.rmtree(store / old, ignore_errors=True)


def write_version(
    tagged: pa.Table,
    partitions_dir: Path,
    *,
    info: dict[str, Any] | None = None,
    keep: int = KEEP_VERSIONS,
) -> dict[str, Any]:
    """Write `tagged` as a new version of the nine partitions and make it current; returns its
    manifest (`info` merged in). Keeps the newest `keep` versions."""
    if keep < 1:
        raise EmoverseError(f"keep must be at least 1, got {keep}")
    partitions_dir = Path(partitions_dir)
    store = versions_dir(partitions_dir)
    store.mkdir(parents=True, exist_ok=True)
    with _writer_lock(store):
        _drop_leftovers(partitions_dir, store)
        existing = list_versions(partitions_dir)
        version = f"v{(int(existing[-1][1:]) if existing else 0) + 1:06d}"
        tmp = store / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
        try:
            splits, nbytes = _write_labels(tagged, tmp)
            lexicon = load_lexicon()
            manifest: dict[str, Any] = {
                "version": version,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "tagger_version": TAGGER_VERSION,
                "lexicon": {
                    "file": "nrclex/data/nrc_en.json",
                    "nrclex": nrclex.__version__,
                    "sha256": lexicon.sha256,
                },
            }
            manifest.update(info or {})
            manifest.update(
                version=version,
                rows=tagged.num_rows,
                counts={label: sum(splits[label].values()) for label in LABELS},
                splits=splits,
                bytes=nbytes,
                layout=LAYOUT,
                files={label: {s: split_file(label, s) for s in SPLITS} for label in LABELS},
                digests={
                    label: {s: _digest(tmp / split_file(label, s)) for s in SPLITS}
                    for label in LABELS
                },
            )
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
            (tmp / CARD_NAME).write_text(dataset_card(manifest), encoding="utf-8")
            for name in (MANIFEST_NAME, CARD_NAME):
                _fsync(tmp / name)
            _fsync(tmp)
            os.rename(tmp, store / version)  # complete versions only ever carry a vNNNNNN name
            _fsync(store)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _switch(partitions_dir, store / version)
        _prune(partitions_dir, store, keep, current=version)
    return manifest


def _digest(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def partition_problems(partitions_dir: Path, *, hashes: bool = False) -> list[str]:
    """What is wrong with the current version's files: missing, of another size (or, with
    `hashes`, other bytes) than its manifest recorded, or not readable as Parquet. Empty when
    all is well, or before the first tagged run."""
    partitions_dir = Path(partitions_dir)
    manifest = read_manifest(partitions_dir)
    if manifest is None:
        return []
    problems = []
    for rel, want in _recorded_files(manifest):
        path = partitions_dir / rel
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        size = path.stat().st_size
        if want and size != want.get("size"):
            problems.append(f"{path} is damaged ({size} bytes, {want.get('size')} recorded)")
            continue
        if want and hashes and sha256_file(path) != want.get("sha256"):
            problems.append(f"{path} is damaged (its sha256 differs from the manifest's)")
            continue
        try:
            pq.ParquetFile(path).metadata  # noqa: B018 (reads the footer: a cut file fails)
        except (OSError, pa.ArrowException) as exc:
            problems.append(f"{path} is not a readable Parquet file ({str(exc)[:120]})")
    return problems


def _recorded_files(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(file, its recorded size and sha256) for every file of a manifest, in either layout."""
    digests = manifest.get("digests") or {}
    found = []
    for label, files in (manifest.get("files") or {}).items():
        if isinstance(files, str):  # layout 1: one file per label
            found.append((files, digests.get(label) or {}))
        else:
            found += [(rel, (digests.get(label) or {}).get(s) or {}) for s, rel in files.items()]
    return found


def check_partitions(partitions_dir: Path) -> None:
    """Raise MissingStageOutputError naming the first damaged partition file, and how to
    rebuild it."""
    if problems := partition_problems(partitions_dir):
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MissingStageOutputError(
            f"partition file {problems[0]}{more}; `emoverse tag` writes the partitions again"
        )


def write_partitions(tagged: pa.Table, partitions_dir: Path) -> dict[str, int]:
    """`write_version` without run details; returns the row count per label."""
    return write_version(tagged, partitions_dir)["counts"]


def read_partition(partitions_dir: Path, label: str, split: str | None = None) -> pa.Table:
    """Read one label's rows (optionally one split) with the declared schema."""
    if split is not None and (one := Path(partitions_dir) / split_file(label, split)).is_file():
        return pq.read_table(one, schema=TAGGED_SCHEMA)
    files = label_files(partitions_dir, label)
    if not files:
        raise MissingStageOutputError(
            f"no {label} partition under {partitions_dir}; run `emoverse tag` first"
        )
    table = pa.concat_tables(pq.read_table(f, schema=TAGGED_SCHEMA) for f in files)
    if split is not None:
        table = table.filter(pc.equal(table.column("split"), split))
    return table


def read_partitions(partitions_dir: Path) -> pa.Table:
    """Every label's rows, label by label, with the declared schema (as
    `pq.read_table(<partitions>/data)` reads them, with an `emotion` column besides)."""
    return pa.concat_tables(read_partition(partitions_dir, label) for label in LABELS)
