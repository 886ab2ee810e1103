"""Hostile and clumsy use, third round: damaged files beside the model weights, other users
and read-only places, concurrent and terminated CLI runs, empty or damaged registries, and
input that used to end in a traceback or silently in the wrong place. Real tiny models, real
sqlite, real subprocesses."""

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps import cli
from emoverse.paths import RunPaths
from models.registry.model_registry import ModelRegistry

# The code subprocesses run: the PYTHONPATH this test runs under, else this checkout.
REPO = Path(__file__).resolve().parents[2]


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


# --- judging: people, not posts ------------------------------------------------------------------


@pytest.fixture
def one_torch_thread():
    """A 1.4M-parameter model gains nothing from a second thread, and on a shared 2-core
    machine the threads' spin-waits make sampling many times slower; restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _judge_server(data_dir: Path, rules):
    from apps.batcher import BatchSettings
    from apps.server import create_app

    batching = BatchSettings(timeout_s=600)  # a loaded machine writes slowly
    return create_app(data_dir, registry_ttl_s=0, reader_rules=rules, batching=batching)


def test_a_client_cannot_stuff_the_ballot_box(registered, capsys, one_torch_thread):
    import httpx

    from apps.server import running_app
    from emoverse.judgements import JudgementStore, ReaderRules

    data_dir, _ = registered
    rules = ReaderRules(
        per_reader_per_hour=3,
        per_address_per_hour=5,
        new_readers_per_address_per_hour=2,
        min_read_s=0.5,
        words_per_s=10_000,
    )
    with (
        running_app(_judge_server(data_dir, rules)) as url,
        httpx.Client(base_url=url, timeout=120) as a,
        httpx.Client(base_url=url, timeout=120) as b,
        httpx.Client(base_url=url, timeout=120) as c,
    ):

        def poem(client: httpx.Client) -> str:
            got = client.get("/judge/poem")
            assert got.status_code == 200, got.text
            return got.json()["poem_id"]

        def answer(client: httpx.Client, poem_id: str) -> httpx.Response:
            return client.post("/judgements", json={"poem_id": poem_id, "guess": "anger"})

        first = poem(a)
        fast = answer(a, first)  # sooner than a person reads
        assert fast.status_code == 422 and "reading it takes" in fast.json()["message"]
        time.sleep(0.6)
        assert answer(b, first).status_code == 422  # another reader's poem (b has no token)
        assert answer(a, first).status_code == 200  # the refusals did not use the poem up
        for _ in range(2):
            p = poem(a)
            time.sleep(0.6)
            assert answer(a, p).status_code == 200
        p = poem(a)
        time.sleep(0.6)
        limited = answer(a, p)  # a fourth answer this hour
        assert limited.status_code == 429 and "one reader" in limited.json()["message"]
        assert limited.headers["Retry-After"]
        for _ in range(2):
            p = poem(b)
            time.sleep(0.6)
            assert answer(b, p).status_code == 200
        p = poem(b)
        time.sleep(0.6)
        by_address = answer(b, p)  # b's third, the address's sixth
        assert by_address.status_code == 429 and "one address" in by_address.json()["message"]
        crowd = c.get("/judge/poem")  # a third reader from one address this hour
        assert crowd.status_code == 429 and "new readers" in crowd.json()["message"]
        joy = next(m for m in a.get("/models").json()["models"] if m["emotion"] == "joy")
        assert joy["human_accuracy"]["n"] == 5 and joy["human_readers"] == 2
    store = JudgementStore(RunPaths(data_dir).judgements_db)
    readers = store.reader_summary()
    assert [r["answers"] for r in readers] == [3, 2]
    code, out, _ = _cli(["judgements", "--data-dir", str(data_dir)], capsys)
    assert code == 0 and str(readers[0]["reader"]) in out
    argv = [
        "judgements",
        "--data-dir",
        str(data_dir),
        "--discard-reader",
        str(readers[0]["reader"]),
    ]
    code, out, err = _cli(argv, capsys)
    assert code == 0 and "emoverse-joy v1" in out, err
    assert store.accuracy()[("joy", 1)].n == 2 and store.readers()[("joy", 1)] == 1
    record = ModelRegistry.for_data_dir(data_dir, read_only=True).get("joy")
    assert record.human_accuracy is not None and record.human_accuracy["n"] == 2
    code, out, _ = _cli(["models", "--data-dir", str(data_dir)], capsys)
    assert "of 2 by 1" in out


def test_a_damaged_judgements_file_leaves_the_models_listed(registered, capsys, one_torch_thread):
    import httpx

    from apps.server import running_app
    from emoverse.judgements import ReaderRules

    data_dir, _ = registered
    db = RunPaths(data_dir).judgements_db
    db.parent.mkdir(parents=True)
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    code, out, err = _cli(["models", "--data-dir", str(data_dir)], capsys)
    assert code == 0 and "joy" in out and "readers' accuracy left out" in err
    rules = ReaderRules(min_read_s=0)
    with (
        running_app(_judge_server(data_dir, rules)) as url,
        httpx.Client(base_url=url, timeout=120) as http,
    ):
        listed = http.get("/models")
        assert listed.status_code == 200 and listed.json()["models"][0]["emotion"] == "joy"
        assert "left out" in listed.json()["warnings"][0]
        poem_id = http.get("/judge/poem").json()["poem_id"]
        body = {"poem_id": poem_id, "guess": "joy"}
        assert http.post("/judgements", json=body).status_code == 503
        db.rename(db.with_name("damaged.db"))  # moved aside, as the message says
        assert http.post("/judgements", json=body).status_code == 200  # the poem is still open


def test_sigterm_ends_a_cli_run_promptly(scripted_mirror, tmp_path):
    """A SIGTERM while a book downloads (a mirror dripping bytes, in a worker thread) ends the
    process within seconds, its lock released, rather than when the download gives up."""
    from emoverse.corpus import book_path
    from emoverse.runlock import data_dir_lock

    m = scripted_mirror
    m.drip_s = 0.5
    m.script(book_path(1065), "drip")
    data_dir = tmp_path / "data"
    argv = ["ingest", "--data-dir", str(data_dir), "--mirror", m.url, "--ids", "1065"]
    env = _env(EMOVERSE_DOWNLOAD_DEADLINE_S="900", PREFECT_HOME=str(tmp_path / "prefect"))
    run = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 400
        while m.count(book_path(1065)) == 0:  # the flow has started and is downloading
            assert run.poll() is None and time.monotonic() < deadline, "never downloaded"
            time.sleep(0.5)
        time.sleep(2)
        run.terminate()
        started = time.monotonic()
        run.wait(timeout=120)
        assert time.monotonic() - started < 30
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode != 0
    with data_dir_lock(data_dir, on_wait=pytest.fail):  # released: taken without waiting
        pass
