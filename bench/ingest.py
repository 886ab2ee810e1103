"""Ingest benchmark: every book of the shared mirror through a loopback HTTP server, once with
an empty raw cache and once from the cache.

    .venv/bin/python bench/ingest.py [--mirror-dir ../shared/gutenberg] [--max-parallel 2]

Prints books, poems (first passages), passages, lines, rejects, downloads, wall time and poems
per second for each run. The server is Python's own, so the first run measures our fetch and
parse path over real HTTP, not a network.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from the checkout without installing
sys.path.insert(0, str(REPO / "tests"))  # the loopback mirror server lives with the tests

from mirror_server import serve_mirror  # noqa: E402

from emoverse.corpus import BOOK_REJECTS, DEFAULT_PARALLEL, IngestResult, ingest_books  # noqa: E402

DEFAULT_MIRROR = REPO.parent / "shared" / "gutenberg"


def manifest_ids(folder: Path) -> list[int]:
    lines = (folder / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [int(line.split("\t")[0]) for line in lines if line.strip()]


def _row(name: str, result: IngestResult, seconds: float, requests: int) -> str:
    poems = result.poems
    n_poems = sum(1 for i in poems.column("passage_index").to_pylist() if i == 0)
    lines = sum(poems.column("n_lines").to_pylist())
    rejected = sum(1 for r in result.rejects.column("reason").to_pylist() if r in BOOK_REJECTS)
    return (
        f"{name:<12}{result.books:>6}{rejected:>9}{n_poems:>8}{poems.num_rows:>10}{lines:>9}"
        f"{result.fetched:>9}{result.from_cache:>7}{requests:>10}{seconds:>9.2f}"
        f"{n_poems / seconds:>10.0f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror-dir", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument("--max-parallel", type=int, default=DEFAULT_PARALLEL)
    args = parser.parse_args()
    ids = manifest_ids(args.mirror_dir)
    print(f"{len(ids)} books from {args.mirror_dir}, {args.max_parallel} downloads at a time")
    header = (
        f"{'run':<12}{'books':>6}{'rejected':>9}{'poems':>8}{'passages':>10}{'lines':>9}"
        f"{'fetched':>9}{'cache':>7}{'requests':>10}{'wall s':>9}{'poems/s':>10}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="emoverse-bench-") as tmp:
        cache = Path(tmp) / "raw"
        with serve_mirror(args.mirror_dir) as server:
            url = server.url
            for name in ("cold cache", "warm cache"):
                before = server.requests
                start = time.perf_counter()
                result = ingest_books(url, ids, cache_dir=cache, max_parallel=args.max_parallel)
                seconds = time.perf_counter() - start
                print(_row(name, result, seconds, server.requests - before), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
