"""Serving benchmark: `emoverse serve` under concurrent clients, batched and one at a time,
against the same poems written in-process one at a time.

    .venv/bin/python bench/serve.py [--requests 200] [--clients 8 32] [--max-new-tokens 48]
                                    [--today-ref GIT_REF]

A temporary registry holds one scratch:tiny model (untrained: poems mostly run to
--max-new-tokens) under three emotions. Each server is the real CLI in its own process on
loopback; the clients are threads here, each with its own keep-alive connection, sending
POST /generate (n=1, seed = request number, emotions in turn). Runs, in one go:
- in-process, 1 at a time: `PoemGenerator.generate` in a loop, no HTTP;
- for each --clients: the server with `--max-batch 1` (one request at a time, as before
  batching), the batched server (defaults), and with --today-ref the server of that commit
  (its own code, from `git archive`: HF generate under a process-wide lock).
Printed per run: requests, errors, requests/s, tokens/s, p50/p95/p99 latency; then whether
each served poem equals the one written in-process from the same seed (it must, batched or
not; today's server samples otherwise, so it is not compared). Exits 1 on any error or
mismatch.
"""

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from the checkout without installing

from emoverse.corpus import book_to_rows  # noqa: E402
from models.folders.model_folder import build_scratch_model  # noqa: E402
from models.generation.generate import GenerationRequest, PoemGenerator  # noqa: E402
from models.registry.model_registry import ModelRegistry  # noqa: E402

MIRROR = REPO.parent / "shared" / "gutenberg" / "cache" / "epub"
EMOTIONS = ("joy", "sadness", "fear")


def build_registry(data_dir: Path) -> PoemGenerator:
    """One scratch:tiny model registered as the champion of every emotion in EMOTIONS."""
    texts = [r["text"] for r in book_to_rows(1041, (MIRROR / "1041/pg1041.txt").read_bytes())]
    model_dir = build_scratch_model("scratch:tiny", texts, data_dir / "models" / "tiny")
    registry = ModelRegistry.for_data_dir(data_dir)
    for emotion in EMOTIONS:
        registry.register(
            emotion, model_dir, metrics={}, parent="scratch:tiny", data_fingerprint=""
        )
    return PoemGenerator(model_dir)


def bodies(requests: int, max_new_tokens: int) -> list[dict]:
    return [
        {"emotion": EMOTIONS[i % len(EMOTIONS)], "seed": i, "max_new_tokens": max_new_tokens}
        for i in range(requests)
    ]


class Run:
    def __init__(
        self,
        name: str,
        seconds: float,
        latencies: list[float],
        tokens: int,
        errors: int,
        poems: list | None,
    ):
        self.name, self.seconds, self.latencies = name, seconds, latencies
        self.tokens, self.errors, self.poems = tokens, errors, poems

    def row(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        ms = [percentile(lat, q) * 1000 for q in (50, 95, 99)]
        done = len(self.latencies)
        return (
            f"| {self.name} | {done} | {self.errors} | {done / self.seconds:.2f} "
            f"| {self.tokens / self.seconds:.0f} | {ms[0]:.0f} | {ms[1]:.0f} | {ms[2]:.0f} |"
        )


def in_process(generator: PoemGenerator, work: list[dict]) -> tuple[Run, list[int]]:
    """The same generations without HTTP, one at a time (every emotion is the same model).
    They run in a worker thread, as the server's do: torch's OpenMP threads behave otherwise
    in the main thread (on a busy 2-core machine, 7x slower for this model)."""
    latencies: list[float] = []
    poems: list = []
    tokens: list[int] = []

    def loop() -> None:
        for body in work:
            t = time.perf_counter()
            request = GenerationRequest(seed=body["seed"], max_new_tokens=body["max_new_tokens"])
            rows = generator.rows(request)
            generator.cohort(rows).run()
            poems.append([generator.text(row) for row in rows])
            tokens.append(sum(row.new_tokens for row in rows))
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    worker = threading.Thread(target=loop)
    worker.start()
    worker.join()
    seconds = time.perf_counter() - started
    return Run("in-process, 1 at a time", seconds, latencies, sum(tokens), 0, poems), tokens


def over_http(name: str, url: str, work: list[dict], clients: int, tokens: list[int]) -> Run:
    """`clients` threads taking the next request from a shared list until none is left.
    Tokens count those of the poems answered (the in-process run counted each request's)."""
    latencies: list[float] = []
    poems: list = [None] * len(work)
    errors = 0
    lock = threading.Lock()
    next_index = iter(range(len(work)))

    def client() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=300) as http:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                t = time.perf_counter()
                try:
                    response = http.post("/generate", json=work[i])
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - t
                with lock:
                    latencies.append(elapsed)
                    if ok:
                        poems[i] = response.json()["poems"]
                    else:
                        errors += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    served = sum(t for t, p in zip(tokens, poems, strict=True) if p is not None)
    return Run(name, seconds, latencies, served, errors, poems)


def checkout(ref: str, into: Path) -> Path:
    """The checkout of commit `ref`, unpacked under `into`."""
    archive = subprocess.run(
        ["git", "archive", ref], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def start_server(
    data_dir: Path, torch_threads: int, options: list[str], source: Path = REPO
) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:  # a free loopback port for the server to take
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "apps.cli", "serve", "--data-dir", str(data_dir)]
    server = subprocess.Popen(
        [*command, "--port", str(port), *options],
        cwd=source,
        env={
            **os.environ,
            "PYTHONPATH": str(source),
            "HF_HUB_OFFLINE": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "OMP_NUM_THREADS": str(torch_threads),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read()[-2000:]}")
        try:
            httpx.get(url + "/emotions", timeout=1).raise_for_status()
            for emotion in EMOTIONS:  # loads each model once, not timed
                httpx.post(url + "/generate", json={"emotion": emotion, "max_new_tokens": 4})
            return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not answer within 120 s")


def served_run(
    name: str,
    data_dir: Path,
    args: argparse.Namespace,
    options: list[str],
    work: list[dict],
    clients: int,
    tokens: list[int],
    source: Path = REPO,
) -> Run:
    server, url = start_server(data_dir, args.torch_threads, options, source)
    try:
        return over_http(name, url, work, clients, tokens)
    finally:
        server.terminate()
        server.wait(timeout=30)


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--today-ref",
        default=None,
        help="also run the server of this git commit (e.g. the one before batching)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="intra-op threads of every run (OMP_NUM_THREADS of the servers); 1 suits this "
        "model: a second thread gains nothing and, on a busy machine, spins (default: 1)",
    )
    args = parser.parse_args()
    if args.requests < 2 or min(args.clients) < 1 or not 1 <= args.max_new_tokens <= 200:
        parser.error("need --requests >= 2, --clients >= 1, 1 <= --max-new-tokens <= 200")
    if args.torch_threads < 1:
        parser.error("need --torch-threads >= 1")
    torch.set_num_threads(args.torch_threads)

    work = bodies(args.requests, args.max_new_tokens)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        generator = build_registry(data_dir)
        in_process(generator, work[:2])  # warm-up, not timed
        baseline, tokens = in_process(generator, work)
        runs.append(baseline)
        del generator
        today = checkout(args.today_ref, Path(tmp) / "today") if args.today_ref else None
        for clients in args.clients:
            if today is not None:
                name = f"HTTP, {clients} clients, today's server ({args.today_ref})"
                runs.append(served_run(name, data_dir, args, [], work, clients, tokens, today))
            one = ["--max-batch", "1", "--batch-window-ms", "0"]
            name = f"HTTP, {clients} clients, one at a time"
            runs.append(served_run(name, data_dir, args, one, work, clients, tokens))
            name = f"HTTP, {clients} clients, batched"
            runs.append(served_run(name, data_dir, args, [], work, clients, tokens))

    print(
        f"device: CPU ({os.cpu_count()} cores), {args.torch_threads} torch thread(s); "
        "model: scratch:tiny; "
        f"{len(EMOTIONS)} emotions; n=1, up to {args.max_new_tokens} new tokens per poem, "
        f"{sum(tokens)} in all"
    )
    print("| run | requests | errors | req/s | tokens/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(run.row())
    failed = sum(run.errors for run in runs)
    for run in runs[1:]:
        if "today's" in run.name:
            continue
        same = sum(1 for a, b in zip(baseline.poems, run.poems, strict=True) if a == b)
        print(f"{run.name}: poems equal to in-process: {same}/{len(work)}")
        failed += len(work) - same
    for clients in args.clients:
        by_name = {run.name: run for run in runs}
        one = by_name[f"HTTP, {clients} clients, one at a time"]
        batched = by_name[f"HTTP, {clients} clients, batched"]
        print(f"{clients} clients: batched / one at a time: {one.seconds / batched.seconds:.2f}x")
        if today is not None:
            old = by_name[f"HTTP, {clients} clients, today's server ({args.today_ref})"]
            print(
                f"{clients} clients: batched / today's server: {old.seconds / batched.seconds:.2f}x"
            )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
