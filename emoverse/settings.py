"""Defaults a run resolves its options against: data dir, mirror, book ids, base model."""

import os
from dataclasses import dataclass
from pathlib import Path

from emoverse.errors import EmoverseError
from emoverse.gutenberg import GUTENBERG_URL

REPO_ROOT = Path(__file__).resolve().parents[1]
CURATED_IDS_FILE = REPO_ROOT / "data" / "curated_ids.txt"
DEFAULT_BASE_MODEL = "scratch:tiny"


def default_data_dir() -> Path:
    return Path(os.environ.get("EMOVERSE_DATA_DIR", "data/run"))


def default_mirror() -> str:
    return os.environ.get("EMOVERSE_GUTENBERG_MIRROR", GUTENBERG_URL)


def curated_ids() -> list[int]:
    """The curated poetry book ids in `data/curated_ids.txt` (one per line, `#` comments)."""
    entries = (line.split("#")[0].strip() for line in CURATED_IDS_FILE.read_text().splitlines())
    return parse_ids(",".join(e for e in entries if e))


def parse_ids(text: str) -> list[int]:
    """`"1041, 574"` -> [1041, 574]; a clear error for anything that is not a positive integer."""
    ids: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) == 0:
            raise EmoverseError(f"invalid Gutenberg id {part!r}: ids are positive integers")
        if int(part) not in ids:
            ids.append(int(part))
    if not ids:
        raise EmoverseError("no Gutenberg ids given")
    return ids


@dataclass(frozen=True)
class RunPaths:
    """Where each stage writes under one data dir."""

    data_dir: Path

    @property
    def poems(self) -> Path:
        return self.data_dir / "poems"

    @property
    def partitions(self) -> Path:
        return self.data_dir / "partitions"

    @property
    def models(self) -> Path:
        return self.data_dir / "models"

    @property
    def hf_cache(self) -> Path:
        return self.data_dir / "cache" / "datasets"
