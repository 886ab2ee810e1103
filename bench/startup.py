"""Start-up costs, one run: install (cold and warm cache), a fresh clone's first poem, the rerun,
and where a run's seconds go that are not training or evaluation.

    python3 bench/startup.py                       # everything, the demo recipe (`make run`)
    python3 bench/startup.py --recipe smoke        # --max-steps 3 --eval-samples 4 (minutes)
    python3 bench/startup.py --skip-install        # the runs only, in an existing clone

Steps, each timed as wall seconds and CPU seconds (user + system of every process it started;
on a loaded machine the CPU figure moves less than the wall one):

1. `git clone` of this checkout's HEAD into `<work>/emoverse` (`<work>/shared` links to the
   shared data, as `../shared` beside a checkout), then `make .venv/.installed` with empty uv and
   pip caches (cold), then again with the venv removed and the caches kept (warm). With
   `--pip` the same, forcing the pip fallback (`NO_UV=1`).
2. The first poem: `make run` (the demo recipe, or `--recipe smoke`), then `emoverse generate`.
   Fresh clone to first poem = clone + warm install + run + generate.
3. The rerun: `make run` again, nothing changed.
4. Overhead: the rerun's Prefect log, per flow and task (every stage is reused there, so all of
   it is overhead); the temporary server's start; the CLI's imports (`python -X importtime`).
Writes `<work>/startup.json` and prints a Markdown table.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = "--max-steps 3 --eval-samples 4"
DEMO_IDS = "1041,574,1065,12242"
LOG_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+\s*\| (.*)$")


def timed(cmd: list[str] | str, cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Run one command to completion; its wall and CPU seconds, its output in `log`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, shell=isinstance(cmd, str)
        )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"startup: {cmd} failed ({done.returncode}); see {log}")
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def seconds(line: str) -> float | None:
    match = LOG_LINE.match(line)
    if not match:
        return None
    h, m, s = int(match[1]), int(match[2]), float(match[3])
    return h * 3600 + m * 60 + s


def prefect_spans(log: Path) -> dict:
    """From a run's Prefect log: the temporary server's start (its start line to the first flow
    line), and the seconds attributed to each flow and task run: the gap before each of its
    lines (the stages run one after another, so the run that logs next is the one that was
    working), task runs grouped by stage name (train-joy, evaluate-joy, ... -> train, ...)."""
    spans: dict[str, float] = {}
    server = first_flow = last = None
    for line in log.read_text(errors="replace").splitlines():
        t = seconds(line)
        if t is None:
            continue
        text = LOG_LINE.match(line)[4]
        if "Starting temporary server" in text and server is None:
            server = t
        run = re.match(r"(Flow run|Task run) '([^']+)'", text)
        if run:
            if first_flow is None:
                first_flow = last = t
            name = re.sub(r"-[0-9a-f]{3}$", "", run[2])  # Prefect's task run suffix
            if run[1] == "Task run":
                name = "task " + name.split("-")[0]
            elif name.startswith("train-") and name != "train-base":
                name = "flow train-<emotion>"
            else:
                name = "flow " + name
            spans[name] = spans.get(name, 0.0) + (t - last)
            last = t
    out = {k: round(v, 1) for k, v in spans.items()}
    if server is not None and first_flow is not None:
        out["server start"] = round(first_flow - server, 1)
    if first_flow is not None and last is not None:
        out["first flow line to last"] = round(last - first_flow, 1)
    return out


def import_seconds(clone: Path, env: dict[str, str]) -> dict:
    """Cumulative import seconds of the modules a run imports, from `-X importtime`."""
    python = str(clone / ".venv" / "bin" / "python")
    code = "import apps.cli, flows.pipeline"
    done = subprocess.run(
        [python, "-X", "importtime", "-c", code], cwd=clone, env=env, capture_output=True, text=True
    )
    top: dict[str, float] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if match and len(match[2]) <= 1:  # top-level imports only
            top[match[3]] = int(match[1]) / 1e6
    heavy = dict(sorted(top.items(), key=lambda kv: -kv[1])[:8])
    return {"total_s": round(sum(top.values()), 1), **{k: round(v, 1) for k, v in heavy.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/emoverse-startup"))
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--recipe", choices=["demo", "smoke"], default="demo")
    parser.add_argument("--skip-install", action="store_true", help="reuse <work>/emoverse")
    parser.add_argument("--pip", action="store_true", help="also time the pip fallback")
    args = parser.parse_args()

    work = args.work.resolve()
    clone = work / "emoverse"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    results: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        "load_at_start": os.getloadavg(),
        "recipe": args.recipe,
    }
    logs = work / "logs"
    if not args.skip_install:
        if work.exists():
            shutil.rmtree(work)
        logs.mkdir(parents=True)
        (work / "shared").symlink_to(args.shared.resolve())
        results["clone"] = timed(
            ["git", "clone", "-q", str(REPO), str(clone)], work, env, logs / "clone.log"
        )
        installers = [("uv", {})] + ([("pip", {"NO_UV": "1"})] if args.pip else [])
        for name, extra in installers:
            caches = {
                "UV_CACHE_DIR": str(work / f"cache-{name}" / "uv"),
                "PIP_CACHE_DIR": str(work / f"cache-{name}" / "pip"),
            }
            for temperature in ("cold", "warm"):
                shutil.rmtree(clone / ".venv", ignore_errors=True)
                results[f"install {name} {temperature}"] = timed(
                    ["make", ".venv/.installed"],
                    clone,
                    {**env, **caches, **extra},
                    logs / f"install-{name}-{temperature}.log",
                )
        if args.pip:  # the runs below use the uv install
            shutil.rmtree(clone / ".venv")
            timed(["make", ".venv/.installed"], clone, {**env, **caches}, logs / "install.log")
    logs.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    run_env = {**env, "EMOVERSE_DATA_DIR": str(data)}
    # The demo is `make run`; smoke is the same command with tiny budgets.
    make_run: list[str] | str = ["make", "run"]
    if args.recipe == "smoke":
        make_run = (
            ".venv/bin/emoverse run --mirror ../shared/gutenberg "
            f"--ids {DEMO_IDS} --base-model scratch:tiny {SMOKE}"
        )
    results["run"] = timed(make_run, clone, run_env, logs / "run.log")
    results["generate"] = timed(
        [
            ".venv/bin/emoverse",
            "generate",
            "--emotion",
            "joy",
            "--prompt",
            "The morning",
            "--seed",
            "3",
        ],
        clone,
        run_env,
        logs / "generate.log",
    )
    results["rerun"] = timed(make_run, clone, run_env, logs / "rerun.log")
    results["run spans"] = prefect_spans(logs / "run.log")
    results["rerun spans"] = prefect_spans(logs / "rerun.log")
    results["imports"] = import_seconds(clone, env)
    results["help"] = timed([".venv/bin/emoverse", "--help"], clone, env, logs / "help.log")
    if "clone" in results:
        parts = ["clone", "install uv warm", "run", "generate"]
        results["fresh clone to first poem (warm cache)"] = {
            k: round(sum(results[p][k] for p in parts), 1) for k in ("wall_s", "cpu_s")
        }
        parts[1] = "install uv cold"
        results["fresh clone to first poem (cold cache)"] = {
            k: round(sum(results[p][k] for p in parts), 1) for k in ("wall_s", "cpu_s")
        }
    (work / "startup.json").write_text(json.dumps(results, indent=2))

    print(f"{results['date']}, {results['machine']}, load at start {results['load_at_start']}")
    print(f"recipe: {args.recipe}\n\n| step | wall s | CPU s |\n|---|---:|---:|")
    for key, value in results.items():
        if isinstance(value, dict) and "wall_s" in value:
            print(f"| {key} | {value['wall_s']} | {value['cpu_s']} |")
    for name in ("rerun spans", "imports"):
        print(f"\n{name}:\n\n| | s |\n|---|---:|")
        for key, value in results[name].items():
            print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
