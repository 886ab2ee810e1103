"""bench/gpu_run.sh, the one call a lent GPU runs: its CPU dry run end to end (so the script
cannot rot between GPU loans), and a step killed at its time limit without stopping the rest."""

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

BOOKS = ("1041", "574")  # what the dry run asks for


def _packed_mirror(gutenberg_dir: Path, dest: Path) -> Path:
    """The two books as bench/gpu_prepare.sh packs the whole mirror: a .tar.gz of its layout."""
    manifest = (gutenberg_dir / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    kept = [manifest[0], *(line for line in manifest[1:] if line.split("\t")[0] in BOOKS)]
    with tarfile.open(dest, "w:gz") as tar:
        data = ("\n".join(kept) + "\n").encode()
        info = tarfile.TarInfo("MANIFEST.tsv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for book in BOOKS:
            tar.add(gutenberg_dir / "cache" / "epub" / book, arcname=f"cache/epub/{book}")
    return dest


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_returns_the_files_the_device_would(
    gutenberg_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    mirror = _packed_mirror(gutenberg_dir, tmp_path / "mirror.tar.gz")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(
        [
            *("bash", "bench/gpu_run.sh", "--dry-run"),
            *("--work", str(tmp_path / "work"), "--mirror", str(mirror)),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

    # What the device returns: at most 8 files, plain names, nothing deeper.
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["RESULTS.md", "bench-RESULTS.md", "results.json", "run.log", "gpu-results.tar.gz"]
    )
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)

    results = json.loads((out / "results.json").read_text())
    steps = results["run"]["steps"]
    assert set(steps) == {"check", "throughput", "corpus", "family", "conditional"}
    assert all(s["rc"] == 0 and not s["timed_out"] for s in steps.values())
    assert results["corpus"]["books"] == 2 and results["corpus"]["poems"] > 0
    models = results["family"]["models"]
    assert set(models) == {"neutral", "anger", "anticipation", "disgust", "fear", "joy"} | {
        "sadness",
        "surprise",
        "trust",
    }
    base = models["neutral"]["evaluation"]
    assert base["n_samples"] == 4 and set(base["judges"]) >= {"nrc", "empath"}
    gated = [e for e, m in models.items() if "gate" in m]
    assert gated, "no child was trained and gated"
    conditional = results["conditional"]
    assert conditional["budget_steps"] == sum(
        m["metrics"]["steps"] for m in models.values() if "metrics" in m
    )
    assert conditional["metrics"]["steps"] <= conditional["budget_steps"]
    assert len(conditional["emotions"]) == 8
    assert results["throughput"]["speedup"] > 0

    report = (out / "RESULTS.md").read_text()
    assert "**Dry run**" in report
    for heading in (
        "## Training throughput",
        "## The corpus",
        "## Training",
        "### Judge: nrc",
        "### Judge: empath",
        "### The gate: where a child fails to beat its base, and why",
        "## The family against the conditional model",
        "## Sample poems",
    ):
        assert heading in report, heading
    assert re.search(r"^\| neutral \| \d+ \| \d+ \| \d+ \| \d+ \|$", report, re.M)
    assert "bash bench/gpu_run.sh --dry-run" in report  # the exact command
    assert "| emoverse trainer (" in (out / "bench-RESULTS.md").read_text()

    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        members = set(tar.getnames())
    for name in ("loss-base.png", "loss-children.png", "loss-conditional.png", "labels.png"):
        assert f"bench/gpu-results/{name}" in members, name
    assert "bench/gpu-results/profile.txt" in members
    assert "bench/gpu-results/confusion-family-nrc.png" in members
    assert "bench/gpu-results/logs/family.log" in members
    # Every figure RESULTS.md shows is in the tarball.
    for shown in re.findall(r"\]\((bench/gpu-results/[^)]+)\)", report):
        assert shown in members, shown


def test_a_step_past_its_limit_is_killed_and_reported(tmp_path: Path) -> None:
    from gpu_run import _run_step

    started = time.perf_counter()
    with (tmp_path / "run.log").open("w") as log:
        outcome = _run_step("check", ["--work", str(tmp_path)], 1, tmp_path / "logs", log)
    assert outcome["timed_out"] and outcome["rc"] != 0
    assert time.perf_counter() - started < 30
    assert "check: killed at its limit of 1 s" in (tmp_path / "run.log").read_text()
