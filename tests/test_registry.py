"""The per-emotion registry on a real MLflow sqlite database, with real (tiny, untrained)
model folders: every version is logged as an MLflow model."""

import pytest
from conftest import link_model

from emoverse.errors import EmoverseError, NoModelError, UnknownEmotionError
from models.records import Evaluation
from models.registry.model_registry import CHAMPION, ModelRegistry


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return ModelRegistry.for_data_dir(tmp_path)


@pytest.fixture
def model_folder(scratch_model):
    """model_folder(tmp_path, name): a model folder there (the scratch model, hard-linked)."""
    return lambda tmp_path, name: link_model(scratch_model, tmp_path / name)


def test_register_then_look_up_the_champion(registry, tmp_path, model_folder):
    assert registry.uri == f"sqlite:///{tmp_path.resolve()}/registry/mlflow.db"
    v1 = registry.register(
        "joy",
        model_folder(tmp_path, "j1"),
        metrics={"val_loss": 4.2},
        parent="emoverse-neutral v1",
        data_fingerprint="abc",
    )
    v2 = registry.register(
        "joy",
        model_folder(tmp_path, "j2"),
        metrics={"val_loss": 4.0},
        parent="emoverse-neutral v1",
        data_fingerprint="abd",
    )
    assert (v1.version, v2.version) == (1, 2)
    champion = registry.get("joy")
    assert champion.version == 2 and champion.aliases == [CHAMPION]
    assert champion.path == str(tmp_path / "j2")
    assert champion.metrics == {"val_loss": 4.0} and champion.data_fingerprint == "abd"
    assert registry.get("joy", version=1).path == str(tmp_path / "j1")


def test_unpromoted_version_leaves_the_champion(registry, tmp_path, model_folder):
    registry.register(
        "fear", model_folder(tmp_path, "f1"), metrics={}, parent="p", data_fingerprint="x"
    )
    registry.register(
        "fear",
        model_folder(tmp_path, "f2"),
        metrics={},
        parent="p",
        data_fingerprint="y",
        promote=False,
    )
    assert registry.get("fear").version == 1
    listed = registry.list("fear")
    assert [(r.version, r.aliases) for r in listed] == [(1, [CHAMPION]), (2, [])]


def test_list_covers_every_emotion_in_label_order(registry, tmp_path, model_folder):
    for emotion in ("trust", "anger", "neutral"):
        registry.register(
            emotion, model_folder(tmp_path, emotion), metrics={}, parent="p", data_fingerprint="x"
        )
    assert [r.emotion for r in registry.list()] == ["anger", "trust", "neutral"]


def test_missing_and_unknown_emotions_fail_clearly(registry):
    with pytest.raises(NoModelError, match="no sadness model with alias 'champion'"):
        registry.get("sadness")
    with pytest.raises(UnknownEmotionError, match="valid emotions: anger, anticipation"):
        registry.get("happiness")


def test_a_second_client_sees_the_same_registry(registry, tmp_path, model_folder):
    registry.register(
        "surprise", model_folder(tmp_path, "s1"), metrics={}, parent="p", data_fingerprint="x"
    )
    assert ModelRegistry.for_data_dir(tmp_path).get("surprise").version == 1


def test_promote_and_roll_back_the_champion(registry, tmp_path, model_folder):
    for i in (1, 2, 3):
        registry.register(
            "trust",
            model_folder(tmp_path, f"t{i}"),
            metrics={},
            parent="p",
            data_fingerprint=str(i),
        )
    assert registry.get("trust").version == 3
    assert registry.promote("trust", 1).version == 1
    assert registry.rollback("trust").version == 3  # back to the one champion before
    assert registry.rollback("trust").version == 2
    assert registry.rollback("trust").version == 1
    with pytest.raises(NoModelError, match="no earlier champion"):
        registry.rollback("trust")
    with pytest.raises(NoModelError, match="no trust model with version 9"):
        registry.promote("trust", 9)


REGISTER_ONE = """
import os, shutil, sys
from pathlib import Path
from models.registry.model_registry import ModelRegistry
data_dir, emotion, folder = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
shutil.copytree(sys.argv[4], folder, copy_function=os.link)
ModelRegistry.for_data_dir(data_dir).register(
    emotion, folder, metrics={}, parent="p", data_fingerprint=folder.name
)
"""


def test_eight_processes_registering_at_once_lose_nothing(tmp_path, scratch_model):
    """The fan-out's children finish together: each registers from its own process, on a
    database that none of them has created yet."""
    import subprocess
    import sys

    emotions = ["joy", "fear"] * 4
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                REGISTER_ONE,
                str(tmp_path),
                emotion,
                str(tmp_path / f"m{i}"),
                str(scratch_model),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, emotion in enumerate(emotions)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, "\n".join(errors)
    registry = ModelRegistry.for_data_dir(tmp_path)
    for emotion in ("joy", "fear"):
        records = registry.list(emotion)
        assert [r.version for r in records] == [1, 2, 3, 4]
        assert len({r.path for r in records}) == 4
        assert registry.get(emotion).version == 4


def test_cli_promotes_and_rolls_back(registry, tmp_path, capsys, model_folder):
    from apps import cli

    for i in (1, 2):
        registry.register(
            "anger",
            model_folder(tmp_path, f"a{i}"),
            metrics={},
            parent="p",
            data_fingerprint=str(i),
        )
    base = ["models", "--data-dir", str(tmp_path), "--emotion", "anger"]
    assert cli.main([*base, "--promote", "1"]) == 0
    assert "emoverse-anger champion is now v1" in capsys.readouterr().out
    assert cli.main([*base, "--rollback"]) == 0
    assert "emoverse-anger champion is now v2" in capsys.readouterr().out
    assert cli.main(["models", "--data-dir", str(tmp_path), "--rollback"]) == cli.EXIT_BAD_INPUT
    assert "need --emotion" in capsys.readouterr().err


def test_registering_the_same_folder_again_returns_its_version(registry, tmp_path, model_folder):
    folder = model_folder(tmp_path, "a1")
    first = registry.register("anger", folder, metrics={}, parent="p", data_fingerprint="x")
    registry.register(
        "anger", model_folder(tmp_path, "a2"), metrics={}, parent="p", data_fingerprint="y"
    )
    registry.rollback("anger")
    again = registry.register("anger", folder, metrics={}, parent="p", data_fingerprint="x")
    assert again.version == first.version == 1
    assert [r.version for r in registry.list("anger")] == [1, 2]
    assert registry.get("anger").version == 1  # a cached rerun leaves the rollback alone


def test_current_falls_back_to_the_newest_unpromoted_version(registry, tmp_path, model_folder):
    registry.register(
        "disgust",
        model_folder(tmp_path, "d1"),
        metrics={},
        parent="p",
        data_fingerprint="x",
        promote=False,
        promotion="fidelity 0.10 does not beat the base's 0.12",
    )
    record, warning = registry.current("disgust")
    assert record.version == 1 and record.aliases == []
    assert record.promotion == "fidelity 0.10 does not beat the base's 0.12"
    assert "no champion" in warning and "v1" in warning and "does not beat" in warning
    # The gate's own reasons start "not promoted: "; the warning says so once, not twice.
    registry.register(
        "disgust",
        model_folder(tmp_path, "d2"),
        metrics={},
        parent="p",
        data_fingerprint="y",
        promote=False,
        promotion="not promoted: perplexity 9.0 is not below base 8.0",
    )
    _, warning = registry.current("disgust")
    assert warning.endswith("v2, which was not promoted (perplexity 9.0 is not below base 8.0)"), (
        warning
    )
    registry.promote("disgust", 1)
    assert registry.current("disgust") == (registry.get("disgust"), None)
    with pytest.raises(NoModelError):
        registry.current("surprise")


# --- hardening (issue 15) ----------------------------------------------------------------------


def _registered_data_dir(tmp_path, model, name="data"):
    data = tmp_path / name
    folder = link_model(model, data / "models" / "joy" / "run-1")
    ModelRegistry.for_data_dir(data).register(
        "joy", folder, metrics={}, parent="p", data_fingerprint="x"
    )
    return data


def test_a_copied_data_dir_uses_its_own_models(tmp_path, monkeypatch, scratch_model):
    import shutil

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original = _registered_data_dir(tmp_path, scratch_model)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    path = ModelRegistry.for_data_dir(copy, read_only=True).get("joy").path
    assert path == str(copy.resolve() / "models" / "joy" / "run-1")
    # A version registered with only an absolute path (before relative paths) whose folder
    # moved with its data dir resolves under the data dir it is read from.
    old = ModelRegistry(f"sqlite:///{original.resolve()}/registry/mlflow.db")
    link_model(scratch_model, original / "models" / "joy" / "run-2")
    old.register(
        "joy", original / "models" / "joy" / "run-2", metrics={}, parent="p", data_fingerprint="y"
    )
    moved = tmp_path / "moved"
    original.rename(moved)
    assert ModelRegistry.for_data_dir(moved, read_only=True).get("joy").path == str(
        moved.resolve() / "models" / "joy" / "run-2"
    )


def test_read_commands_create_nothing(tmp_path, monkeypatch, capsys, scratch_model):
    from apps import cli

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    missing = tmp_path / "nowhere"
    for argv in (["models"], ["generate", "--emotion", "joy"], ["serve", "--port", "1"]):
        assert cli.main([*argv, "--data-dir", str(missing)]) == cli.EXIT_BAD_INPUT
        assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()
    data = _registered_data_dir(tmp_path, scratch_model)
    (data / "registry" / "mlflow.db.lock").unlink()
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert cli.main(["models", "--data-dir", str(data)]) == 0  # a reader takes no lock
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    file = tmp_path / "a-file"
    file.write_text("x")
    assert cli.main(["models", "--data-dir", str(file)]) == cli.EXIT_BAD_INPUT
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 3],
        lambda raw: (raw[:4096] + bytes(range(256)) * (len(raw) // 256))[: len(raw)],
        lambda raw: b"this is not a database at all\n" * 100,
    ],
    ids=["truncated", "garbled", "not-sqlite"],
)
def test_a_damaged_registry_database_is_one_line(
    tmp_path, monkeypatch, capsys, damage, scratch_model
):
    from apps import cli

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = _registered_data_dir(tmp_path, scratch_model)
    db = data / "registry" / "mlflow.db"
    db.write_bytes(damage(db.read_bytes()))
    for argv in (
        ["models"],
        ["generate", "--emotion", "joy"],
        ["models", "--emotion", "joy", "--rollback"],
    ):
        assert cli.main([*argv, "--data-dir", str(data)]) == cli.EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "registry" in err and "Traceback" not in err


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "nonsense://somewhere"])
def test_an_unusable_tracking_uri_is_one_line_and_quick(tmp_path, monkeypatch, capsys, uri):
    import socket
    import time

    from apps import cli

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(port=port))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.1")
    started = time.monotonic()
    assert cli.main(["models", "--data-dir", str(tmp_path)]) == cli.EXIT_BAD_INPUT
    assert time.monotonic() - started < 60  # generous: minutes before
    err = capsys.readouterr().err
    assert "cannot be used" in err and "MLFLOW_TRACKING_URI" in err


def test_promoting_the_champion_is_a_no_op(registry, tmp_path, capsys, model_folder):
    from apps import cli

    for i in (1, 2):
        registry.register(
            "fear", model_folder(tmp_path, f"f{i}"), metrics={}, parent="p", data_fingerprint=str(i)
        )
    history = registry._champion_history("emoverse-fear")
    assert registry.promote("fear", 2).version == 2
    base = ["models", "--data-dir", str(tmp_path), "--emotion", "fear"]
    assert cli.main([*base, "--promote", "2"]) == 0
    assert "already the champion; nothing changed" in capsys.readouterr().out
    assert registry._champion_history("emoverse-fear") == history == [1, 2]
    assert registry.rollback("fear").version == 1  # one step back, not back to v2


def test_rolling_back_an_emotion_without_versions_is_a_clear_error(
    registry, tmp_path, capsys, model_folder
):
    from apps import cli

    registry.register(
        "joy", model_folder(tmp_path, "j"), metrics={}, parent="p", data_fingerprint="x"
    )
    with pytest.raises(NoModelError, match="no model versions"):
        registry.rollback("sadness")
    argv = ["models", "--data-dir", str(tmp_path), "--emotion", "sadness", "--rollback"]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    assert "sadness has no model versions" in capsys.readouterr().err


def test_a_folder_that_is_no_model_is_refused_in_one_line(registry, tmp_path, model_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmoverseError, match="holds no safetensors weights"):
        registry.register("joy", empty, metrics={}, parent="p", data_fingerprint="x")
    no_config = model_folder(tmp_path, "no-config")
    (no_config / "config.json").unlink()
    with pytest.raises(EmoverseError, match=r"no config\.json"):
        registry.register("joy", no_config, metrics={}, parent="p", data_fingerprint="x")
    assert registry.list("joy") == []


def test_a_version_hands_back_its_evaluation_and_parent_version_typed(
    registry, tmp_path, model_folder
):
    evaluation = Evaluation(
        emotion="joy",
        perplexity={"joy": 210.4, "neutral": None},
        test_poems={"joy": 5, "neutral": 0},
        label_shares={"joy": 0.25, "neutral": 0.75},
        fidelity=0.25,
        lift=0.1,
        distinct_1=0.5,
        distinct_2=0.9,
        samples=[],
        config_key="k",
        n_samples=8,
    )
    child = registry.register(
        "joy",
        model_folder(tmp_path, "j1"),
        metrics={"val_loss": 4.2, "evaluation": evaluation.to_dict()},
        parent="emoverse-neutral v7",
        parent_version=7,
        data_fingerprint="abc",
    )
    again = registry.get("joy", version=child.version)
    assert again.evaluation == evaluation and again.parent_version == 7
    assert again.evaluations == {}
    # Versions registered before the version was its own tag: read from the lineage text.
    older = registry.register(
        "fear",
        model_folder(tmp_path, "f1"),
        metrics={},
        parent="emoverse-neutral v3",
        data_fingerprint="x",
    )
    assert older.parent_version == 3 and older.evaluation is None
    # Anything else is no neutral base version, whatever it looks like.
    for i, parent in enumerate(("scratch:tiny", "emoverse-joy v2", "emoverse-neutral v2 (old)")):
        other = registry.register(
            "trust",
            model_folder(tmp_path, f"t{i}"),
            metrics={},
            parent=parent,
            data_fingerprint="y",
        )
        assert other.parent_version is None, parent
    conditional = registry.register(
        "conditional",
        model_folder(tmp_path, "c1"),
        metrics={"evaluations": {"joy": evaluation.to_dict()}},
        parent="scratch:tiny",
        data_fingerprint="z",
    )
    assert conditional.evaluations == {"joy": evaluation} and conditional.evaluation is None
