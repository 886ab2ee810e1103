"""Benchmarks run on the CPU too, so CI keeps them working (their figures are not checked)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each runs a benchmark in a process of its own


def test_train_throughput_bench_prints_both_loops_and_the_ratio():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_throughput.py"), "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "model: scratch:tiny" in out
    rows = dict(re.findall(r"^(baseline.*?|emoverse trainer)\s+([\d,]+)\s+[\d.]+%$", out, re.M))
    assert set(rows) == {"baseline (fp32, pad 256, batch 10)", "emoverse trainer"}
    assert all(int(v.replace(",", "")) > 0 for v in rows.values())
    assert re.search(r"^speed-up: [\d.]+x$", out, re.M)


def test_serve_bench_prints_every_run_without_errors():
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "serve.py"),
            *("--requests", "4", "--clients", "2", "--max-new-tokens", "4"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    rows = dict(
        re.findall(
            r"^\| (in-process, 1 at a time|HTTP, 2 clients, [a-z ]+) \| 4 \| (\d+) \|", out, re.M
        )
    )
    assert rows == {
        "in-process, 1 at a time": "0",
        "HTTP, 2 clients, one at a time": "0",
        "HTTP, 2 clients, batched": "0",
    }
    assert re.search(r"^2 clients: batched / one at a time: [\d.]+x$", out, re.M)
    assert "HTTP, 2 clients, batched: poems equal to in-process: 4/4" in out


def test_dial_bench_prints_the_dial_the_merge_and_the_latencies(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "dial.py"),
            *("--books", "2", "--base-steps", "3", "--child-steps", "3", "--samples", "4"),
            *("--requests", "2", "--out", str(tmp_path / "report")),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.count("| strength | fidelity (NRC) |") == 2
    assert "### Merging a new recipe" in out and "cached requests (median)" in out
    assert re.search(r"^fluent up to: \w+ [\d.]+, \w+ [\d.]+$", out, re.M)
    assert len(list((tmp_path / "report").glob("dial-*.png"))) == 2
