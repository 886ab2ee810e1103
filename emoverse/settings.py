"""What a run reads from its environment, in one place, and the defaults it falls back to.

    EMOVERSE_DATA_DIR            the data dir of the CLI and of every flow (default data/run)
    EMOVERSE_GUTENBERG_MIRROR    the Gutenberg mirror (default the public site)
    EMOVERSE_PARALLEL_TRAININGS  children trained at once in one process (default 1)
    EMOVERSE_POLL_SECONDS        how often `train` polls the children's runs (default 2)
    EMOVERSE_MAX_BOOK_BYTES      largest download accepted from a mirror (default 128 MiB)
    EMOVERSE_DOWNLOAD_DEADLINE_S seconds one download may take in all, then retried (default 300)
    EMOVERSE_MAX_BODY_BYTES      largest request body `emoverse serve` reads (default 64 KiB)
    EMOVERSE_MAX_CONNECTIONS     connections `emoverse serve` holds open at once (default 256)
    EMOVERSE_KEEPALIVE_S         seconds an idle keep-alive connection is kept (default 5)
    EMOVERSE_TRUSTED_HOSTS       comma-separated Host names the server answers (default any)
    MLFLOW_TRACKING_URI          a shared registry instead of <data_dir>/registry/
    (models.registry.model_registry)
    RANK, LOCAL_RANK, WORLD_SIZE this process's place in a distributed launch (set by torchrun)

Each is read when asked for, not at import: a worker's environment is the one that counts.
"""

import os
from pathlib import Path

from emoverse.errors import EmoverseError

GUTENBERG_URL = "https://www.gutenberg.org"  # the public site, production default
DEFAULT_DATA_DIR = "data/run"  # relative to the working directory: the checkout, for workers
DEFAULT_BASE_MODEL = "scratch:tiny"
REPO_ROOT = Path(__file__).resolve().parents[1]
CURATED_IDS_FILE = REPO_ROOT / "data" / "curated_ids.txt"


def data_dir() -> Path:
    return Path(os.environ.get("EMOVERSE_DATA_DIR") or DEFAULT_DATA_DIR)


def tracking_uri() -> str | None:
    """A shared MLflow tracking server or database, or None: the data dir's own registry."""
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def mirror() -> str:
    return os.environ.get("EMOVERSE_GUTENBERG_MIRROR") or GUTENBERG_URL


def parallel_trainings() -> int:
    """In-process children trained at once. One by default: on a CPU they share the same
    cores, on one GPU its memory; more GPUs mean more `gpu` workers, not threads."""
    return int(os.environ.get("EMOVERSE_PARALLEL_TRAININGS", "1"))


def poll_seconds() -> float:
    return float(os.environ.get("EMOVERSE_POLL_SECONDS", "2"))


def max_book_bytes() -> int:
    """A body larger than this is not a book (the largest real ones are a few tens of MB)."""
    return _positive("EMOVERSE_MAX_BOOK_BYTES", 128 * 2**20, int)


def download_deadline_s() -> float:
    """How long one download may take, all of it: a mirror that drips a byte every few
    seconds never trips a read timeout, so each attempt also has this overall deadline."""
    return _positive("EMOVERSE_DOWNLOAD_DEADLINE_S", 300.0, float)


def max_body_bytes() -> int:
    return _positive("EMOVERSE_MAX_BODY_BYTES", 64 * 1024, int)


def max_connections() -> int:
    return _positive("EMOVERSE_MAX_CONNECTIONS", 256, int)


def keepalive_s() -> float:
    return _positive("EMOVERSE_KEEPALIVE_S", 5.0, float)


def trusted_hosts() -> list[str] | None:
    """Host header values the server answers (a name, or `*.example.org`); None: any. Set it
    when binding beyond loopback, against DNS rebinding."""
    text = os.environ.get("EMOVERSE_TRUSTED_HOSTS", "")
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    return hosts or None


def _positive(name: str, default, kind):
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise EmoverseError(f"{name} must be a positive number, got {text!r}") from None
    if not value > 0:
        raise EmoverseError(f"{name} must be a positive number, got {text!r}")
    return value


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
        # ASCII digits only: "¹" and "٣" are digits to str.isdigit, not to int().
        if not (part.isascii() and part.isdigit()) or int(part) == 0:
            raise EmoverseError(f"invalid Gutenberg id {part!r}: ids are positive integers")
        if int(part) not in ids:
            ids.append(int(part))
    if not ids:
        raise EmoverseError("no Gutenberg ids given")
    return ids
