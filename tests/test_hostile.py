"""Hostile and clumsy use, third round: damaged files beside the model weights, other users
and read-only places, concurrent and terminated CLI runs, empty or damaged registries, and
input that used to end in a traceback or silently in the wrong place. Real tiny models, real
sqlite, real subprocesses."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from apps import cli
from emoverse.paths import RunPaths
from models.registry.model_registry import ModelRegistry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def registered(scratch_model, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A copy of the tiny model registered as joy's champion in a data dir of its own:
    (the data dir, the model folder)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data_dir = tmp_path / "data"
    folder = data_dir / "models" / "joy" / "run-abc"
    shutil.copytree(scratch_model, folder)
    ModelRegistry.for_data_dir(data_dir).register(
        "joy", folder, metrics={}, parent="p", data_fingerprint="x"
    )
    return data_dir, folder


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- input that used to do the wrong thing -----------------------------------------------------


def test_empty_ids_are_refused_not_the_curated_list(tmp_path, capsys):
    argv = ["ingest", "--data-dir", str(tmp_path / "d"), "--mirror", str(tmp_path), "--ids", ""]
    code, _, err = _cli(argv, capsys)
    assert code == cli.EXIT_BAD_INPUT and "no Gutenberg ids given" in err
    assert not (tmp_path / "d").exists()


def test_a_garbled_poems_file_says_to_rerun_ingest(tmp_path):
    from emoverse.errors import MissingStageOutputError
    from emoverse.tagging.stage import tag_poems

    paths = RunPaths(tmp_path / "data")
    paths.poems_file.parent.mkdir(parents=True)
    paths.poems_file.write_bytes(b"PAR1" + os.urandom(2000) + b"PAR1")
    with pytest.raises(MissingStageOutputError, match="run `emoverse ingest` again") as info:
        tag_poems(paths.poems_file, paths.partitions)
    assert str(paths.poems_file) in str(info.value) and "\n" not in str(info.value)
    assert not paths.partitions.exists()


def test_report_out_naming_an_existing_file_is_one_line(registered, tmp_path, capsys):
    data_dir, _ = registered
    out = tmp_path / "report.md"
    out.write_text("mine")
    code, _, err = _cli(["report", "--data-dir", str(data_dir), "--out", str(out)], capsys)
    assert code == cli.EXIT_BAD_INPUT and f"--out {out}" in err and "Traceback" not in err
    assert out.read_text() == "mine"


# --- other users and read-only places ----------------------------------------------------------


def test_model_folder_files_all_get_the_folders_file_mode(scratch_model):
    from emoverse.atomic import default_file_mode

    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in scratch_model.iterdir()}
    assert "model.safetensors" in modes and "config.json" in modes
    assert set(modes.values()) == {default_file_mode()}, modes  # safetensors writes 0600


def _family(scratch_model: Path, data_dir: Path) -> None:
    """neutral v1 and its child joy (both the untrained tiny model), registered."""
    registry = ModelRegistry.for_data_dir(data_dir)
    for emotion, parent in (("neutral", ""), ("joy", "emoverse-neutral v1")):
        folder = data_dir / "models" / emotion / "run-abc"
        shutil.copytree(scratch_model, folder)
        registry.register(emotion, folder, metrics={}, parent=parent, data_fingerprint="x")


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, **extra}


def _read_only_cli(data_dir: Path, argv: list[str], **env: str) -> subprocess.CompletedProcess:
    """`emoverse argv` with `data_dir` read-only: a read-only bind mount in a mount namespace
    of its own when run as root (permissions do not stop root), else its modes."""
    command = [sys.executable, "-m", "apps.cli", *argv]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("root without unshare: cannot make a folder read-only")
        script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, "sh", str(data_dir), *command]
    else:
        for p in [data_dir, *data_dir.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        return subprocess.run(
            command, capture_output=True, text=True, env=_env(**env), cwd=REPO, timeout=300
        )
    finally:
        if os.geteuid() != 0:
            for p in [data_dir, *data_dir.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


def test_a_blend_from_a_read_only_data_dir_goes_to_the_users_cache(scratch_model, tmp_path):
    data_dir = tmp_path / "data"
    _family(scratch_model, data_dir)
    argv = ["generate", "--data-dir", str(data_dir), "--emotion", "joy", "--strength", "1.5"]
    done = _read_only_cli(
        data_dir, [*argv, "--max-new-tokens", "8"], XDG_CACHE_HOME=str(tmp_path / "cache")
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert not RunPaths(data_dir).blends.exists()
    assert len(list((tmp_path / "cache" / "emoverse" / "blends").iterdir())) >= 1


def test_run_on_a_read_only_data_dir_is_one_line(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    argv = ["ingest", "--data-dir", str(data_dir), "--mirror", str(tmp_path), "--ids", "1065"]
    done = _read_only_cli(data_dir, argv)
    assert done.returncode == cli.EXIT_BAD_INPUT, done.stderr
    assert f"cannot write to the data dir {data_dir}" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


# --- concurrent and terminated runs ------------------------------------------------------------


def test_a_second_run_on_a_data_dir_waits_for_the_first_saying_so(tmp_path):
    from emoverse.runlock import data_dir_lock

    data_dir = tmp_path / "data"
    argv = ["ingest", "--data-dir", str(data_dir), "--mirror", str(tmp_path / "none"), "--ids", "1"]
    with data_dir_lock(data_dir, on_wait=pytest.fail):
        # The mirror is checked before the lock is taken: make it exist, empty.
        (tmp_path / "none").mkdir()
        second = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", *argv],
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=REPO,
        )
        assert second.stderr is not None
        line = second.stderr.readline()  # blocks until it says something
        assert "is writing to" in line and str(data_dir) in line and "waiting" in line
        assert second.poll() is None  # still waiting, not dead
        second.terminate()
        second.wait(timeout=60)
