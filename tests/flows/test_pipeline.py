"""The whole DAG through Prefect once (four books, scratch:tiny), and the CLI on top of it."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from apps import cli
from emoverse.emotions import LABELS
from emoverse.tagging import read_partitions, write_version
from flows.pipeline import pipeline
from flows.training import train
from models.config import TrainingSettings
from models.folders.card import read_card_metadata
from models.registry.model_registry import CHAMPION, ModelRegistry

# The reference books: Shakespeare's Sonnets, Blake, The Raven, Dickinson.
BOOKS = [1041, 574, 1065, 12242]
SETTINGS = TrainingSettings(max_steps=3, eval_samples=4)  # a few steps per model keep it quick


@pytest.fixture(scope="module")
def gutenberg_server(full_gutenberg_server: str) -> str:
    """Whole books: the run's counts are those of the four reference books."""
    return full_gutenberg_server


RUN_IDS: list = []  # the fixture's pipeline run (later tests run the pipeline again)


@pytest.fixture(scope="module")
def pipeline_run(prefect_harness, gutenberg_server, tmp_path_factory):
    """One real run over a loopback HTTP mirror; few steps per model keep it quick."""
    data_dir = tmp_path_factory.mktemp("run")
    state = pipeline(str(data_dir), gutenberg_server, BOOKS, settings=SETTINGS, return_state=True)
    RUN_IDS.append(state.state_details.flow_run_id)  # which pipeline run on the shared server
    return data_dir, state.result()


def test_pipeline_writes_nine_partitions_and_nine_champions(pipeline_run):
    data_dir, result = pipeline_run
    assert result["ingest"]["books"] == 4
    poems = pq.read_table(data_dir / "poems" / "poems.parquet")
    assert poems.num_rows == result["ingest"]["poems"] > 600
    partitions = read_partitions(data_dir / "partitions")
    assert partitions.num_rows == poems.num_rows
    assert set(partitions.column("label").to_pylist()) == set(LABELS)
    assert result["partitions"] == {
        label: partitions.filter(pc.equal(partitions["label"], label)).num_rows for label in LABELS
    }

    registry = ModelRegistry.for_data_dir(data_dir)
    assert result["registered"] == dict.fromkeys(LABELS, 1) and result["skipped"] == {}
    base = registry.get("neutral")
    for label in LABELS:
        record, _ = registry.current(label)
        # Champion exactly when the promotion gate said so, with the gate's numbers recorded.
        assert (record.aliases == [CHAMPION]) == (label in result["champions"])
        assert record.promotion == result["promotion"][label]
        if label != "neutral":
            promoted = label in result["champions"]
            assert record.promotion.startswith("not promoted: ") != promoted
            # Every judge's test is named, and whatever else decided it.
            assert all(name in record.promotion for name in ("NRC", "Empath", "NADE"))
            # Every share carries its interval and n; every judge is recorded.
            judges = record.metrics["evaluation"]["judges"]
            assert set(judges) == {"nrc", "empath", "nade"}
            assert 0 <= judges["nade"]["rank_test"]["p_value"] <= 1
            assert judges["nrc"]["fidelity"]["n"] == SETTINGS.eval_samples
            assert judges["nrc"]["base"]["n"] == SETTINGS.eval_samples
            assert 0 <= judges["empath"]["p_value"] <= 1
        else:
            assert record.promotion == "the first neutral base"
        meta = read_card_metadata(record.path)
        assert meta["evaluation"]["fidelity"] == record.metrics["evaluation"]["fidelity"]
        assert meta["emotion"] == label
        expected_parent = (
            "scratch:tiny" if label == "neutral" else f"emoverse-neutral v{base.version}"
        )
        assert meta["parent_model"] == record.parent == expected_parent


@pytest.mark.parametrize("emotion", LABELS)
def test_generate_prints_a_poem_for_every_emotion(pipeline_run, capsys, emotion):
    data_dir, _ = pipeline_run
    assert (
        cli.main(
            [
                "generate",
                "--emotion",
                emotion,
                "--data-dir",
                str(data_dir),
                "--max-new-tokens",
                "16",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert out.strip()
    assert f"emoverse-{emotion} v1" in err


def test_models_lists_the_registry_as_json(pipeline_run, capsys):
    data_dir, result = pipeline_run
    assert cli.main(["models", "--data-dir", str(data_dir), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["emotion"] for r in listed) == sorted(LABELS)
    for r in listed:
        assert (r["aliases"] == [CHAMPION]) == (r["emotion"] in result["champions"])
        assert r["promotion"] == result["promotion"][r["emotion"]]
        assert set(r["metrics"]["evaluation"]) >= {"fidelity", "lift", "perplexity", "distinct_2"}
    assert cli.main(["models", "--data-dir", str(data_dir), "--emotion", "joy"]) == 0
    assert "joy" in capsys.readouterr().out


def _versions(registry: ModelRegistry) -> dict[str, list[int]]:
    versions: dict[str, list[int]] = {}
    for record in registry.list():
        versions.setdefault(record.emotion, []).append(record.version)
    return versions


def test_a_rerun_with_nothing_changed_reuses_every_stage(pipeline_run, gutenberg_server):
    data_dir, first = pipeline_run
    registry = ModelRegistry.for_data_dir(data_dir)
    before = _versions(registry)
    weights = {
        r.emotion: (Path(r.path) / "model.safetensors").stat().st_mtime_ns for r in registry.list()
    }
    manifest = json.loads((data_dir / "partitions" / "_manifest.json").read_text())

    again = pipeline(str(data_dir), gutenberg_server, BOOKS, settings=SETTINGS)

    assert again["ingest"]["reused"] and again["ingest"]["poems"] == first["ingest"]["poems"]
    assert json.loads((data_dir / "partitions" / "_manifest.json").read_text()) == manifest
    assert again["registered"] == first["registered"] and _versions(registry) == before
    assert {
        r.emotion: (Path(r.path) / "model.safetensors").stat().st_mtime_ns for r in registry.list()
    } == weights  # no model was trained or written again


def test_changing_one_partition_retrains_only_that_child(pipeline_run):
    data_dir, _ = pipeline_run
    registry = ModelRegistry.for_data_dir(data_dir)
    before = _versions(registry)
    tagged = read_partitions(data_dir / "partitions")
    joy_train = pc.and_(pc.equal(tagged["label"], "joy"), pc.equal(tagged["split"], "train"))
    dropped = pc.index(joy_train, True).as_py()  # one joy training poem leaves the corpus
    kept = pa.concat_tables([tagged.slice(0, dropped), tagged.slice(dropped + 1)])
    write_version(kept, data_dir / "partitions")

    out = train(str(data_dir), SETTINGS)

    assert out["registered"] == {**{e: v[-1] for e, v in before.items()}, "joy": 2}
    assert _versions(registry) == {**before, "joy": [1, 2]}


def test_a_failed_child_fails_the_run_and_a_retry_trains_only_it(pipeline_run):
    data_dir, _ = pipeline_run
    registry = ModelRegistry.for_data_dir(data_dir)
    before = _versions(registry)
    children = SETTINGS.model_copy(update={"child_epochs": 1})  # the base is reused as it is
    anger_dir = data_dir / "models" / "anger"
    anger_dir.rename(anger_dir.with_name("anger.away"))
    anger_dir.write_text("a file where anger's models should go")  # its training cannot save
    try:
        with pytest.raises(RuntimeError, match=r"training failed for: anger \("):
            train(str(data_dir), children)
    finally:
        anger_dir.unlink()
        anger_dir.with_name("anger.away").rename(anger_dir)
    failed_run = _versions(registry)
    assert failed_run["anger"] == before["anger"] and failed_run["neutral"] == before["neutral"]
    others = [e for e in LABELS if e not in ("anger", "neutral")]
    assert all(failed_run[e] == [*before[e], before[e][-1] + 1] for e in others)

    out = train(str(data_dir), children)  # the retry

    assert _versions(registry) == {**failed_run, "anger": [*before["anger"], 2]}
    assert out["registered"] == {e: v[-1] for e, v in _versions(registry).items()}


def test_a_partition_under_min_poems_is_skipped_and_named(pipeline_run):
    data_dir, result = pipeline_run
    smallest = min((n, e) for e, n in result["partitions"].items() if e != "neutral")[1]
    registry = ModelRegistry.for_data_dir(data_dir)
    before = _versions(registry)
    train_poems = registry.list(smallest)[-1].metrics["train_poems"]
    settings = TrainingSettings(
        min_poems=train_poems + 1,
        max_steps=1,
        adapter="lora",
        batch_size=4,
        block_size=64,
        eval_samples=2,
    )
    children_before = _flow_runs_named(f"train-{smallest}")
    out = train(str(data_dir), settings)
    # Skipped before the fan-out: no child run was even started for it.
    assert _flow_runs_named(f"train-{smallest}") == children_before
    assert smallest in out["skipped"]
    assert f"fewer than min_poems = {train_poems + 1}" in out["skipped"][smallest]
    assert smallest not in out["registered"]
    # The skipped emotion keeps its versions; the others got a new one.
    assert [r.version for r in registry.list(smallest)] == before[smallest]
    base = registry.list("neutral")[-1]
    assert base.version == before["neutral"][-1] + 1
    joy = registry.list("joy")[-1]
    assert (
        joy.version == before["joy"][-1] + 1 and joy.parent == f"emoverse-neutral v{base.version}"
    )
    # One step per stage made a worse base: the gate keeps the champion base, and this base's
    # children cannot become champions (a family is one base and its children).
    champion = registry.get("neutral")
    assert champion.version < base.version and "champion" not in base.aliases
    assert base.promotion.startswith("not promoted: neutral perplexity ")
    assert "worse than the champion's" in base.promotion
    assert "champion" not in joy.aliases
    assert joy.promotion.startswith("not promoted")

    # This run's children are LoRA adapters on the new base; the base is a full model.
    assert (Path(joy.path) / "adapter_config.json").exists()
    assert (Path(registry.get("neutral").path) / "model.safetensors").exists()
    config = read_card_metadata(joy.path)["training_config"]
    assert (config["batch_size"], config["block_size"], config["adapter"]) == (4, 64, "lora")


def test_a_report_artifact_shows_every_figure_it_links(tmp_path):
    """The family report's figures, loss curves included, embedded in the markdown artifact."""
    from emoverse.report import plot_loss_curves
    from tasks.progress import inline_images

    history = {"train": [(1, 5.0), (2, 4.0)], "validation": [(2, 4.5)]}
    plot_loss_curves({"anger": history}, tmp_path / "loss-anger.png")
    markdown = "# report\n\n![anger loss curve](loss-anger.png)\n\n![gone](missing.png)\n"
    shown = inline_images(markdown, tmp_path)
    assert shown.count("![anger loss curve](data:image/png;base64,") == 1
    assert "loss-anger.png" not in shown and "report folder" not in shown
    assert "*(gone: not drawn)*" in shown


def _flow_runs_named(name: str) -> int:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
    return len(found)


def test_too_few_neutral_poems_name_the_setting_as_each_caller_does(pipeline_run, capsys):
    """The flow's message names the parameter as the UI's run form does; the CLI its flag."""
    from emoverse.errors import SettingError

    data_dir, result = pipeline_run
    too_many = result["partitions"]["neutral"] + 1
    with pytest.raises(SettingError) as caught:
        train(str(data_dir), SETTINGS.model_copy(update={"min_poems": too_many}))
    assert str(caught.value).startswith(f"min_poems is {too_many}: no neutral base to train")
    assert "--" not in str(caught.value)
    argv = ["train", "--data-dir", str(data_dir), "--min-poems", str(too_many)]
    assert cli.main([*argv, "--max-steps", "3", "--eval-samples", "4"]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"emoverse: error: --min-poems is {too_many}: no neutral base to train" in err


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_missing_book_fails_cleanly_and_keeps_the_poems(pipeline_run, gutenberg_server, capsys):
    data_dir, _ = pipeline_run
    poems_file = data_dir / "poems" / "poems.parquet"
    before = _digest(poems_file)
    code = cli.main(
        [
            "ingest",
            "--data-dir",
            str(data_dir),
            "--mirror",
            gutenberg_server,
            "--ids",
            "99999999",
        ]
    )
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT
    assert "emoverse: error: Gutenberg book 99999999 not found" in err
    assert "Traceback" not in err
    assert _digest(poems_file) == before


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "apps.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["generate", "--emotion", "happy"],
            "unknown emotion 'happy'; valid emotions: anger, anticipation, disgust, fear, joy, "
            "sadness, surprise, trust, neutral",
        ),
        (
            ["run", "--mirror", "/no/such/mirror", "--ids", "1065"],
            "Gutenberg mirror folder /no/such/mirror does not exist",
        ),
        (["ingest", "--ids", "1065,x7"], "invalid Gutenberg id 'x7': ids are positive integers"),
        (
            ["train", "--base-model", "scratch:huge"],
            "unknown scratch preset 'scratch:huge'; "
            "valid: scratch:tiny, scratch:small, scratch:gpt2",
        ),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message, tmp_path):
    done = _run_cli(*args, "--data-dir", str(tmp_path))
    assert done.returncode == cli.EXIT_BAD_INPUT
    assert done.stderr.strip() == f"emoverse: error: {message}"
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_generate_before_any_run_says_what_to_do(tmp_path):
    done = _run_cli("generate", "--emotion", "joy", "--data-dir", str(tmp_path))
    assert done.returncode == cli.EXIT_BAD_INPUT
    assert "no joy model with alias 'champion'" in done.stderr
    assert "run `emoverse run`" in done.stderr and "Traceback" not in done.stderr


def test_the_run_publishes_its_artifacts(pipeline_run):
    from prefect import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    artifacts = []
    with get_client(sync_client=True) as client:  # every page: the API answers 200 at most
        while page := client.read_artifacts(limit=200, offset=len(artifacts)):
            artifacts += page
        run = client.read_flow_run(RUN_IDS[0])
        runs = client.read_flow_runs(limit=200, sort=FlowRunSort.START_TIME_DESC)
    # Only what the fixture's run made, i.e. while it ran (other tests run the pipeline too,
    # on other data, on the same server; tests run one at a time). By time rather than by
    # parent: the in-process children run in threads, unlinked to the train run.

    def during(t) -> bool:
        return t is not None and run.start_time <= t <= run.end_time

    artifacts = [a for a in artifacts if during(a.created)]
    by_key = {a.key: a for a in artifacts if a.key}
    distribution = by_key["label-distribution"]
    assert distribution.type == "table"
    assert {row["label"] for row in json.loads(distribution.data)} == set(LABELS)
    assert by_key["label-distribution-chart"].data.count("data:image/png;base64,") == 1
    for label in LABELS:
        assert "data:image/png;base64," in by_key[f"loss-curve-{label}"].data
    assert by_key["registry-versions"].type == "table"
    finished = {a.description for a in artifacts if a.type == "progress" and float(a.data) == 100}
    stages = {"fetching and splitting books", "tagging poems"}
    assert stages | {f"training {label}" for label in LABELS} <= finished
    report = by_key["family-report"]
    assert report.type == "markdown" and "does each child carry its emotion" in report.data
    assert report.data.count("data:image/png;base64,") >= 3  # fidelity and two matrices
    # Each loss curve shown, not named as a file on some worker's disk.
    assert "report folder" not in report.data and "loss-joy.png" not in report.data
    # Narrow tables of numbers rounded for people; a blank cell is "—", explained.
    fidelity = {r["emotion"]: r for r in json.loads(by_key["family-evaluation"].data)}
    columns = ["emotion", "n", "NRC", "base (NRC)", "p", "Empath", "base (Empath)", "NADE"]
    columns.append("NADE rank test")
    assert list(fidelity["joy"]) == columns
    assert re.fullmatch(r"\d+% \[\d+%–\d+%\]", fidelity["joy"]["NRC"])
    assert (
        fidelity["neutral"]["base (NRC)"] == "—"
        and "—: " in by_key["family-evaluation"].description
    )
    fluency = {r["emotion"]: r for r in json.loads(by_key["family-fluency"].data)}
    assert re.fullmatch(r"[\d,]+\.\d", fluency["neutral"]["perplexity"])
    assert fluency["neutral"]["base's"] == "—"
    versions = json.loads(by_key["registry-versions"].data)
    assert all("not promoted" not in r["why"] for r in versions)  # said once, by "champion"
    assert all(re.fullmatch(r"\d+\.\d\d|—", r["val loss"]) for r in versions), versions

    # The pipeline's own page carries the family's versions and report, and its subflows
    # and children are named for what they do.
    names = {r.name for r in runs if during(r.start_time)}
    on_pipeline = {a.key for a in artifacts if a.flow_run_id == run.id}
    assert {"registry-versions", "family-report"} <= on_pipeline
    assert run.name == f"pipeline-{len(BOOKS)} books"
    assert {f"ingest-{len(BOOKS)} books", "tag", "train-base"} | {
        f"train-{e}" for e in LABELS[:-1]
    } <= names


def test_report_shows_whether_each_child_carries_its_emotion(pipeline_run, capsys, tmp_path):
    data_dir, _ = pipeline_run
    out = tmp_path / "report"
    assert cli.main(["report", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    report = (out / "report.md").read_text()
    for figure in ("fidelity.png", *(f"confusion-{j}.png" for j in ("nrc", "empath", "nade"))):
        assert f"]({figure})" in report
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    registry = ModelRegistry.for_data_dir(data_dir)
    for emotion in LABELS[:-1]:
        record, _ = registry.current(emotion)
        row = next(line for line in report.splitlines() if line.startswith(f"| {emotion} |"))
        assert f"v{record.version}" in row and "n=" in row  # shares with their n
    assert "Empath gives the NRC label to" in report  # the ceiling for the other judges
    assert "| nade | " in report and "on the verses they call positive or negative" in report
    assert f"- joy v{registry.current('joy')[0].version}: " in report  # the gate's reason
    assert report.count("### ") == len(LABELS)  # loss curve and samples per model
    assert cli.main(["models", "--data-dir", str(data_dir)]) == 0
    listing = capsys.readouterr().out
    assert "fidelity NRC" in listing and "family" in listing and "of 4" in listing
    # A data dir that does not exist: one line, nothing created.
    missing = tmp_path / "nothing-here"
    assert cli.main(["report", "--data-dir", str(missing)]) == cli.EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err and not missing.exists()


def test_every_version_is_a_stock_mlflow_model(pipeline_run, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    data_dir, _ = pipeline_run
    registry = ModelRegistry.for_data_dir(data_dir, read_only=True)
    client = MlflowClient(registry.uri)
    for record in registry.list():
        run = client.get_run(record.run_id)
        assert {"learning_rate", "batch_size"} <= set(run.data.params)
        assert run.data.metrics["evaluation.fidelity"] == record.metrics["evaluation"]["fidelity"]
        assert "evaluation.json" in {a.path for a in client.list_artifacts(record.run_id)}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    poems = mlflow.pyfunc.load_model("models:/emoverse-neutral@champion").predict(["The rose"])
    assert len(poems) == 1 and poems[0].startswith("The rose")


def test_a_child_without_poems_is_skipped_before_it_asks_for_the_gpu(
    prefect_harness, gutenberg_dir, tmp_path
):
    """The skip is decided from the partitions' manifest: neither the parent's fan-out nor
    the child itself waits for the `gpu` slot first (held here by another training)."""
    import threading

    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency

    from emoverse.corpus import book_to_rows
    from emoverse.schema import POEM_SCHEMA
    from emoverse.tagging import tag_poems
    from flows.training import train_emotion
    from models.records import SkippedModel
    from models.training.skips import planned_skip
    from tasks.train import GPU_LIMIT, slot_wait_message

    rows = book_to_rows(1065, (gutenberg_dir / "cache/epub/1065/pg1065.txt").read_bytes())
    pq.write_table(pa.Table.from_pylist(rows, schema=POEM_SCHEMA), tmp_path / "poems.parquet")
    data_dir = tmp_path / "data"
    manifest = tag_poems(tmp_path / "poems.parquet", data_dir / "partitions", workers=1).manifest
    emotion = min((manifest["splits"][e]["train"], e) for e in LABELS if e != "neutral")[1]
    too_many = manifest["splits"][emotion]["train"] + 1
    planned = planned_skip(data_dir / "partitions", emotion, too_many)
    assert planned is not None and f"fewer than min_poems = {too_many}" in planned.reason
    assert planned_skip(data_dir / "partitions", emotion, 1) is None or too_many == 1

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=1)
        )
    try:
        with concurrency(GPU_LIMIT, occupy=1):  # another training holds the only slot
            assert "waiting for a slot of the 'gpu' concurrency limit" in slot_wait_message()
            got: list = []
            child = threading.Thread(
                target=lambda: got.append(
                    train_emotion(
                        emotion=emotion,
                        data_dir=str(data_dir),
                        settings=TrainingSettings(min_poems=too_many),
                    )
                ),
                daemon=True,
            )
            child.start()
            child.join(timeout=240)
            assert not child.is_alive(), "the skipped child waited for the gpu slot"
        assert isinstance(got[0], SkippedModel) and got[0].reason == planned.reason
        assert slot_wait_message() is None  # the slot is free again
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)


def test_prefects_temporary_server_gets_time_and_a_timeout_says_how_to_fix_it(
    gutenberg_dir, tmp_path, monkeypatch
):
    """Unset, the start-up limit is 120 s rather than Prefect's 20; a limit the user set is
    kept, and when the server misses it the command ends with one line saying what to do."""
    import os

    from apps.cli.pipeline import STARTUP_TIMEOUT_SETTING

    monkeypatch.delenv(STARTUP_TIMEOUT_SETTING, raising=False)
    assert cli.main(["models", "--data-dir", str(tmp_path / "none")]) == cli.EXIT_BAD_INPUT
    assert os.environ[STARTUP_TIMEOUT_SETTING] == "120"

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        {
            STARTUP_TIMEOUT_SETTING: "1",  # no server starts that fast (its imports alone)
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    argv = ["ingest", "--data-dir", str(tmp_path / "data"), "--mirror", str(gutenberg_dir)]
    done = subprocess.run(
        [sys.executable, "-m", "apps.cli", *argv, "--ids", "1065"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == cli.EXIT_BAD_INPUT, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("emoverse:")]
    assert len(lines) == 1 and "did not start within 1 s" in lines[0], done.stderr[-2000:]
    assert f"{STARTUP_TIMEOUT_SETTING}=300" in lines[0] and "PREFECT_API_URL" in lines[0]
    assert "Traceback" not in done.stderr
