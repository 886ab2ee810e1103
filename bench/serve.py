"""Serving benchmark: `emoverse serve` under concurrent clients, against the same poems written
in-process one at a time.

    .venv/bin/python bench/serve.py [--requests 200] [--clients 8] [--max-new-tokens 48]

A temporary registry holds one scratch:tiny model (untrained: every poem runs to
--max-new-tokens) under three emotions. The server is the real CLI in its own process on
loopback; the clients are threads here, each with its own keep-alive connection, sending
POST /generate (n=1, seed = request number, emotions in turn). Printed per run: requests,
errors, requests/s, p50 and p95 latency; then the served/in-process throughput ratio and
whether each served poem equals the one written in-process from the same seed (it must: the
seed fixes the poem however the requests interleave). Exits 1 on any error or mismatch.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from the checkout without installing

from emoverse.corpus import book_to_rows  # noqa: E402
from models.generate import GenerationRequest, PoemGenerator  # noqa: E402
from models.modeling import build_scratch_model  # noqa: E402
from models.registry import ModelRegistry  # noqa: E402

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


def in_process(generator: PoemGenerator, work: list[dict]) -> tuple[float, list[float], list]:
    """The same generations without HTTP, one at a time (every emotion is the same model).
    They run in a worker thread, as the server's do: torch's OpenMP threads behave otherwise
    in the main thread (on a busy 2-core machine, 7x slower for this model)."""
    latencies: list[float] = []
    poems: list = []

    def loop() -> None:
        for body in work:
            t = time.perf_counter()
            request = GenerationRequest(seed=body["seed"], max_new_tokens=body["max_new_tokens"])
            poems.append(generator.generate(request))
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    worker = threading.Thread(target=loop)
    worker.start()
    worker.join()
    return time.perf_counter() - started, latencies, poems


def over_http(url: str, work: list[dict], clients: int) -> tuple[float, list[float], list, int]:
    """`clients` threads taking the next request from a shared list until none is left."""
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
    return time.perf_counter() - started, latencies, poems, errors


def start_server(data_dir: Path, torch_threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:  # a free loopback port for the server to take
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "apps.cli", "serve", "--data-dir", str(data_dir)]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=REPO,
        env={
            **os.environ,
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
            return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not answer within 120 s")


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="intra-op threads of both runs (OMP_NUM_THREADS of the server); 1 suits this "
        "model: a second thread gains nothing and, on a busy machine, spins (default: 1)",
    )
    args = parser.parse_args()
    if args.requests < 2 or args.clients < 1 or not 1 <= args.max_new_tokens <= 200:
        parser.error("need --requests >= 2, --clients >= 1, 1 <= --max-new-tokens <= 200")
    if args.torch_threads < 1:
        parser.error("need --torch-threads >= 1")
    torch.set_num_threads(args.torch_threads)

    work = bodies(args.requests, args.max_new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        generator = build_registry(data_dir)
        in_process(generator, work[:2])  # warm-up, not timed
        base_s, base_lat, base_poems = in_process(generator, work)
        del generator

        server, url = start_server(data_dir, args.torch_threads)
        try:
            for emotion in EMOTIONS:  # loads each model once, not timed
                httpx.post(url + "/generate", json={"emotion": emotion, "max_new_tokens": 4})
            http_s, http_lat, http_poems, errors = over_http(url, work, args.clients)
        finally:
            server.terminate()
            server.wait(timeout=30)

    mismatched = sum(1 for a, b in zip(base_poems, http_poems, strict=True) if b and a != b)
    print(
        f"device: CPU ({os.cpu_count()} cores), {args.torch_threads} torch thread(s); "
        "model: scratch:tiny; "
        f"{len(EMOTIONS)} emotions; n=1, {args.max_new_tokens} new tokens per poem"
    )
    print(f"{'run':<24}{'requests':>9}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}")
    for name, seconds, lat, errs in (
        ("in-process, 1 at a time", base_s, base_lat, 0),
        (f"HTTP, {args.clients} clients", http_s, http_lat, errors),
    ):
        print(
            f"{name:<24}{len(lat):>9}{errs:>8}{len(lat) / seconds:>9.2f}"
            f"{statistics.median(lat) * 1000:>9.0f}{percentile(lat, 95) * 1000:>9.0f}"
        )
    print(f"served / in-process throughput: {base_s / http_s:.2f}x")
    print(f"served poems equal to in-process: {len(work) - errors - mismatched}/{len(work)}")
    if errors or mismatched:
        sys.exit(1)


if __name__ == "__main__":
    main()
