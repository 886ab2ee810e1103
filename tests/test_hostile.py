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


# --- model folders and the registry -------------------------------------------------------------


def test_a_permuted_tokenizer_is_refused_like_damaged_weights(registered, capsys):
    import json

    data_dir, folder = registered
    record = ModelRegistry.for_data_dir(data_dir, read_only=True).get("joy")
    assert {"tokenizer.json", "config.json", "generation_config.json"} <= set(record.weights)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    names = list(vocab)
    tokenizer["model"]["vocab"] = dict(zip(names, [vocab[n] for n in names[::-1]], strict=True))
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))  # valid JSON, other ids
    code, out, err = _cli(["generate", "--data-dir", str(data_dir), "--emotion", "joy"], capsys)
    assert code == cli.EXIT_BAD_INPUT and not out
    assert f"model file {folder / 'tokenizer.json'} is damaged" in err


def test_the_listing_warns_of_a_truncated_champion(registered, capsys):
    import json

    data_dir, folder = registered
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, out, err = _cli(["models", "--data-dir", str(data_dir)], capsys)
    assert code == 0 and "DAMAGED" in out
    assert "emoverse-joy v1 (champion)" in err and f"weight file {weights} is damaged" in err
    code, out, _ = _cli(["models", "--data-dir", str(data_dir), "--json"], capsys)
    assert "is damaged" in json.loads(out)[0]["damaged"]


def test_an_emptied_registry_is_reported_and_left_as_it_is(registered, capsys):
    data_dir, _ = registered
    db = RunPaths(data_dir).registry_db
    db.write_bytes(b"")
    code, out, err = _cli(["models", "--data-dir", str(data_dir)], capsys)
    assert code == cli.EXIT_BAD_INPUT and "is empty (0 bytes)" in err and "no models" not in out
    assert db.stat().st_size == 0  # not a fresh database laid over it


def test_a_missing_tracking_database_is_named_and_not_created(tmp_path, monkeypatch, capsys):
    db = tmp_path / "missing" / "dir" / "x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    code, out, err = _cli(["models", "--data-dir", str(tmp_path / "data")], capsys)
    assert code == cli.EXIT_BAD_INPUT and f"no model registry database at {db}" in err
    assert "MLFLOW_TRACKING_URI" in err and str(tmp_path / "data") not in err + out
    assert not (tmp_path / "missing").exists()


def test_a_failed_rollback_on_an_empty_data_dir_creates_nothing(tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    code, _, err = _cli(
        ["models", "--data-dir", str(data_dir), "--emotion", "joy", "--rollback"], capsys
    )
    assert code == cli.EXIT_BAD_INPUT and "run `emoverse run` first" in err
    assert list(data_dir.iterdir()) == []


def test_a_promotion_where_none_passed_the_gate_can_be_rolled_back(
    scratch_model, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data_dir = tmp_path / "data"
    folder = data_dir / "models" / "fear" / "run-1"
    shutil.copytree(scratch_model, folder)
    registry = ModelRegistry.for_data_dir(data_dir)
    registry.register("fear", folder, metrics={}, parent="p", data_fingerprint="x", promote=False)
    base = ["models", "--data-dir", str(data_dir), "--emotion", "fear"]
    assert _cli([*base, "--promote", "1"], capsys)[0] == 0
    assert registry.champion_version("fear") == 1
    code, out, err = _cli([*base, "--rollback"], capsys)
    assert code == 0 and "no champion again" in out, err
    assert registry.champion_version("fear") is None
    assert _cli([*base, "--promote", "1"], capsys)[0] == 0  # and again
    assert registry.champion_version("fear") == 1


def test_a_registry_that_is_only_not_writable_is_not_called_damaged(registered):
    data_dir, _ = registered
    argv = ["models", "--data-dir", str(data_dir), "--emotion", "joy", "--promote", "1"]
    ModelRegistry.for_data_dir(data_dir).register(
        "joy", _second_folder(data_dir), metrics={}, parent="p", data_fingerprint="y", promote=False
    )
    argv[-1] = "2"
    done = _read_only_cli(RunPaths(data_dir).registry_db.parent, argv)
    assert done.returncode == cli.EXIT_BAD_INPUT, done.stderr
    assert "permission denied" in done.stderr and "not damaged" in done.stderr
    assert "backup" not in done.stderr and "Traceback" not in done.stderr


def _second_folder(data_dir: Path) -> Path:
    first = data_dir / "models" / "joy" / "run-abc"
    return Path(shutil.copytree(first, data_dir / "models" / "joy" / "run-def"))
