"""Registered versions are stock MLflow models: the transformers and pyfunc loaders read
`models:/emoverse-joy@champion`, the run holds params, metrics and artifacts, and a copied or
moved data dir keeps working once relinked. A real (tiny, briefly trained) model folder."""

import json
import shutil
from pathlib import Path

import mlflow
import pytest
from conftest import link_model
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from apps import cli
from models.config import TrainConfig
from models.folders.card import save_model
from models.registry.model_registry import CHAMPION, ModelRegistry
from models.training.loop import fine_tune

QUICK = TrainConfig(batch_size=8, block_size=64, learning_rate=3e-3, warmup_steps=2, max_steps=4)
URI = "models:/emoverse-joy@champion"
POEMS = ["Shall I compare thee to a summer's day?", "O rose, thou art sick"] * 20


@pytest.fixture(scope="module")
def trained(scratch_model, tmp_path_factory) -> Path:
    """A model folder as training leaves it: weights, card, loss history and plot."""
    out = tmp_path_factory.mktemp("trained") / "joy"
    tuned = fine_tune(scratch_model, POEMS, [], QUICK)
    save_model(tuned, out, emotion="joy", parent="scratch:tiny", data_fingerprint="f", config=QUICK)
    (out / "evaluation.json").write_text(json.dumps({"evaluation": {"fidelity": 0.25}}))
    return out


def _registered(trained: Path, data: Path) -> ModelRegistry:
    folder = link_model(trained, data / "models" / "joy" / "run-1")
    registry = ModelRegistry.for_data_dir(data)
    registry.register(
        "joy",
        folder,
        metrics={"train_loss": 6.5, "evaluation": {"fidelity": 0.25, "perplexity": {"joy": 90}}},
        parent="emoverse-neutral v1",
        data_fingerprint="f",
    )
    return registry


@pytest.fixture
def data(trained, tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _registered(trained, tmp_path / "data")
    return tmp_path / "data"


def _stock(monkeypatch, data: Path) -> None:
    """Point the stock MLflow API at the data dir's registry (as a user would)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{data.resolve()}/registry/mlflow.db")


def test_stock_loaders_read_the_champion(data, monkeypatch):
    _stock(monkeypatch, data)
    pipeline = mlflow.transformers.load_model(URI)
    written = pipeline("The morning", max_new_tokens=8, do_sample=False)
    assert written[0]["generated_text"].startswith("The morning")
    components = mlflow.transformers.load_model(URI, return_type="components")
    assert components["model"].config.model_type == "gpt2"
    poems = mlflow.pyfunc.load_model(URI).predict(["O rose", "The morning"])
    assert len(poems) == 2 and all(isinstance(p, str) and len(p) > 10 for p in poems)
    assert poems[0].startswith("O rose")


def test_the_run_holds_params_metrics_and_artifacts(data):
    registry = ModelRegistry.for_data_dir(data, read_only=True)
    record = registry.get("joy")
    client = MlflowClient(registry.uri)
    version = client.get_model_version_by_alias("emoverse-joy", CHAMPION)
    assert version.run_id == record.run_id and record.model_id
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.003" and run.data.params["max_steps"] == "4"
    assert run.data.metrics["evaluation.fidelity"] == 0.25
    assert run.data.metrics["evaluation.perplexity.joy"] == 90
    curve = client.get_metric_history(run.info.run_id, "loss.train")
    assert [m.step for m in curve] == [1, 2, 3, 4]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"evaluation.json", "README.md", "training_history.json"} <= artifacts
    assert [o.model_id for o in run.outputs.model_outputs] == [record.model_id]
    model = client.get_logged_model(record.model_id)
    assert model.status == LoggedModelStatus.READY and model.source_run_id == run.info.run_id
    assert model.metrics and {m.key for m in model.metrics} >= {"evaluation.fidelity"}
    # Artifacts live under the data dir, beside the database, and the weights are the
    # folder's own file (a hard link), not a second copy.
    artifacts_root = data.resolve() / "registry" / "artifacts"
    assert Path(run.info.artifact_uri).is_relative_to(artifacts_root)
    assert Path(version.source).is_relative_to(artifacts_root)
    logged = Path(version.source) / "model" / "model.safetensors"
    assert logged.stat().st_ino == (Path(record.path) / "model.safetensors").stat().st_ino


def test_registering_the_same_folder_again_logs_nothing_new(data):
    registry = ModelRegistry.for_data_dir(data)
    first = registry.get("joy")
    again = registry.register(
        "joy", Path(first.path), metrics={}, parent="emoverse-neutral v1", data_fingerprint="f"
    )
    assert (again.version, again.run_id) == (first.version, first.run_id)
    client = MlflowClient(registry.uri)
    experiment = client.get_experiment_by_name("emoverse").experiment_id
    assert len(client.search_runs([experiment])) == 1


def test_a_copied_data_dir_loads_with_stock_mlflow_after_the_original_is_gone(
    data, tmp_path, monkeypatch, capsys
):
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    shutil.rmtree(data)
    # The project's own lookup reads the copy's folder, relinked or not.
    assert ModelRegistry.for_data_dir(copy, read_only=True).get("joy").path == str(
        copy.resolve() / "models" / "joy" / "run-1"
    )
    assert cli.main(["models", "--data-dir", str(copy), "--relink"]) == 0
    out = capsys.readouterr().out
    assert f"from {data.resolve()} to {copy.resolve()}" in out
    assert cli.main(["models", "--data-dir", str(copy), "--relink"]) == 0
    assert "nothing changed" in capsys.readouterr().out
    _stock(monkeypatch, copy)
    assert len(mlflow.pyfunc.load_model(URI).predict(["O rose"])) == 1
    client = MlflowClient()
    version = client.get_model_version_by_alias("emoverse-joy", CHAMPION)
    assert Path(version.source).is_relative_to(copy.resolve())
    assert Path(client.get_run(version.run_id).info.artifact_uri).is_relative_to(copy.resolve())


def test_a_moved_data_dir_is_relinked_by_the_next_writer(trained, data, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    data.rename(moved)
    registry = ModelRegistry.for_data_dir(moved)  # a writer: relinks on opening
    assert registry.relinked is not None and registry.relinked[0] == data.resolve()
    # New versions land under the new place too.
    folder = link_model(trained, moved / "models" / "joy" / "run-2")
    registry.register("joy", folder, metrics={}, parent="p", data_fingerprint="g")
    _stock(monkeypatch, moved)
    assert mlflow.pyfunc.load_model("models:/emoverse-joy/1").predict(["O"])[0].startswith("O")
    assert Path(MlflowClient().get_model_version("emoverse-joy", "2").source).is_relative_to(
        moved.resolve()
    )


def test_a_lora_child_is_logged_merged(trained, data, monkeypatch):
    """An adapter folder names its base by path; the logged model is the merged model, so
    stock MLflow loads it without PEFT or the base's folder."""
    lora = QUICK.with_overrides(adapter="lora", learning_rate=3e-2)
    folder = data / "models" / "trust" / "run-1"
    save_model(
        fine_tune(trained, POEMS, [], lora),
        folder,
        emotion="trust",
        parent="emoverse-neutral v1",
        data_fingerprint="f",
        config=lora,
    )
    record = ModelRegistry.for_data_dir(data).register(
        "trust", folder, metrics={}, parent="emoverse-neutral v1", data_fingerprint="f"
    )
    logged = Path(
        MlflowClient(f"sqlite:///{data}/registry/mlflow.db")
        .get_logged_model(record.model_id)
        .artifact_location
    )
    assert (logged / "model" / "model.safetensors").is_file()
    assert not (logged / "model" / "adapter_config.json").exists()
    _stock(monkeypatch, data)
    assert mlflow.pyfunc.load_model("models:/emoverse-trust@champion").predict(["O"])[0]


def test_a_folder_trained_again_takes_its_logged_model_along(data, scratch_model):
    """A damaged folder is removed and trained again under the same name: re-registering
    it keeps the version and points the logged model's weights at the new files."""
    registry = ModelRegistry.for_data_dir(data)
    record = registry.get("joy")
    folder = Path(record.path)
    shutil.rmtree(folder)
    link_model(scratch_model, folder)  # other weights, same folder
    again = registry.register("joy", folder, metrics={}, parent="p", data_fingerprint="f")
    assert again.version == record.version and again.weights != record.weights
    source = MlflowClient(registry.uri).get_model_version("emoverse-joy", "1").source
    logged = Path(source) / "model" / "model.safetensors"
    assert logged.stat().st_ino == (folder / "model.safetensors").stat().st_ino


def _mentions(db: Path, needle: str) -> list[str]:
    """Every (table, column, value) of the sqlite database whose text holds `needle`."""
    import sqlite3

    connection = sqlite3.connect(db)
    try:
        found = []
        query = "SELECT name FROM sqlite_master WHERE type='table'"
        tables = [r[0] for r in connection.execute(query)]
        for table in tables:
            for column in [r[1] for r in connection.execute(f"PRAGMA table_info({table})")]:
                rows = connection.execute(
                    f"SELECT {column} FROM {table} WHERE CAST({column} AS TEXT) LIKE ?",
                    (f"%{needle}%",),
                )
                found += [f"{table}.{column}: {str(v)[:120]}" for (v,) in rows]
        return found
    finally:
        connection.close()


def test_relink_leaves_no_location_of_the_old_place(data, tmp_path, capsys, monkeypatch):
    db = data / "registry" / "mlflow.db"
    # MLflow's own Default experiment lives beside the database, not in ./mlruns of the
    # process that created it: so the data dir names no place outside itself.
    default = MlflowClient(f"sqlite:///{db}").get_experiment("0").artifact_location
    assert Path(default) == data.resolve() / "registry" / "artifacts" / "0"
    moved = tmp_path / "elsewhere"
    data.rename(moved)
    registry = ModelRegistry.for_data_dir(moved, read_only=True)
    assert registry.stale_home() == data.resolve()
    # Stock MLflow is not told (it reads what the database says); `emoverse models` is.
    # (--json: this fixture's evaluation is a stub the table cannot show.)
    assert cli.main(["models", "--data-dir", str(moved), "--json"]) == 0
    note = capsys.readouterr().err
    assert f"still name {data.resolve()}" in note and "--relink" in note
    assert cli.main(["models", "--data-dir", str(moved), "--relink"]) == 0
    capsys.readouterr()
    assert cli.main(["models", "--data-dir", str(moved), "--json"]) == 0
    assert "--relink" not in capsys.readouterr().err
    assert _mentions(moved / "registry" / "mlflow.db", str(data.resolve())) == []
    assert ModelRegistry.for_data_dir(moved, read_only=True).stale_home() is None
    _stock(monkeypatch, moved)
    client = MlflowClient()
    version = client.get_model_version_by_alias("emoverse-joy", CHAMPION)
    assert Path(version.tags["folder"]) == moved.resolve() / "models" / "joy" / "run-1"
    assert Path(client.get_experiment("0").artifact_location).is_relative_to(moved.resolve())
    assert mlflow.pyfunc.load_model(URI).predict(["O"])[0].startswith("O")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _has_ui() -> bool:
    import importlib.util

    ui = Path(mlflow.__file__).parent / "server" / "js" / "build" / "index.html"
    return importlib.util.find_spec("flask") is not None and ui.is_file()


@pytest.mark.skipif(not _has_ui(), reason="the MLflow UI needs full `mlflow`, not mlflow-skinny")
def test_the_mlflow_ui_server_starts_on_the_data_dir_and_lists_the_models(data, tmp_path):
    """The README's `mlflow ui` command, as a user runs it: the UI's page, and the models
    through the REST API it serves the page from. One worker: more (the default is four)
    start in parallel and uvicorn's supervisor kills those slow to answer on a busy machine."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    port = _free_port()
    registry = data.resolve() / "registry"
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", f"sqlite:///{registry}/mlflow.db",
        "--default-artifact-root", str(registry / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"mlflow ui ended: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no mlflow ui: {log.read_text()[-2000:]}"
            time.sleep(0.5)
        page = httpx.get(f"{base}/", timeout=30)
        assert page.status_code == 200 and "<div id=\"root\"" in page.text.replace("'", '"')
        found = httpx.get(
            f"{base}/ajax-api/2.0/mlflow/registered-models/search", timeout=30
        ).json()
        models = {m["name"]: m for m in found["registered_models"]}
        assert set(models) == {"emoverse-joy"}
        assert {a["alias"] for a in models["emoverse-joy"].get("aliases", [])} == {CHAMPION}
        versions = httpx.get(
            f"{base}/ajax-api/2.0/mlflow/model-versions/search",
            params={"filter": "name='emoverse-joy'"},
            timeout=30,
        ).json()["model_versions"]
        assert [v["version"] for v in versions] == ["1"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
