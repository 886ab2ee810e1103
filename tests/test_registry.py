"""The per-emotion registry on a real MLflow sqlite database."""

import pytest

from emoverse.errors import NoModelError, UnknownEmotionError
from models.registry import CHAMPION, ModelRegistry


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return ModelRegistry.for_data_dir(tmp_path)


def _folder(tmp_path, name):
    path = tmp_path / name
    path.mkdir()
    return path


def test_register_then_look_up_the_champion(registry, tmp_path):
    assert registry.uri == f"sqlite:///{tmp_path.resolve()}/registry/mlflow.db"
    v1 = registry.register(
        "joy",
        _folder(tmp_path, "j1"),
        metrics={"val_loss": 4.2},
        parent="emoverse-neutral v1",
        data_fingerprint="abc",
    )
    v2 = registry.register(
        "joy",
        _folder(tmp_path, "j2"),
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


def test_unpromoted_version_leaves_the_champion(registry, tmp_path):
    registry.register("fear", _folder(tmp_path, "f1"), metrics={}, parent="p", data_fingerprint="x")
    registry.register(
        "fear", _folder(tmp_path, "f2"), metrics={}, parent="p", data_fingerprint="y", promote=False
    )
    assert registry.get("fear").version == 1
    listed = registry.list("fear")
    assert [(r.version, r.aliases) for r in listed] == [(1, [CHAMPION]), (2, [])]


def test_list_covers_every_emotion_in_label_order(registry, tmp_path):
    for emotion in ("trust", "anger", "neutral"):
        registry.register(
            emotion, _folder(tmp_path, emotion), metrics={}, parent="p", data_fingerprint="x"
        )
    assert [r.emotion for r in registry.list()] == ["anger", "trust", "neutral"]


def test_missing_and_unknown_emotions_fail_clearly(registry):
    with pytest.raises(NoModelError, match="no sadness model with alias 'champion'"):
        registry.get("sadness")
    with pytest.raises(UnknownEmotionError, match="valid emotions: anger, anticipation"):
        registry.get("happiness")


def test_a_second_client_sees_the_same_registry(registry, tmp_path):
    registry.register(
        "surprise", _folder(tmp_path, "s1"), metrics={}, parent="p", data_fingerprint="x"
    )
    assert ModelRegistry.for_data_dir(tmp_path).get("surprise").version == 1
