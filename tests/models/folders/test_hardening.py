"""Damaged model folders: weights checked against their record, strict loading,
clean one-line errors, with real tiny models and real safetensors files."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from apps import cli
from emoverse.errors import EmoverseError
from models.folders.model_folder import (
    DamagedModelError,
    build_scratch_model,
    recorded_digests,
    weight_digests,
)
from models.generation.generate import PoemGenerator
from models.registry.model_registry import ModelRegistry
from models.training.stages import _saved

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    texts = ["Shall I compare thee to a summer's day?\nThou art more lovely and more temperate"]
    return build_scratch_model("scratch:tiny", texts * 50, tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture
def registered(tiny, tmp_path, monkeypatch):
    """A copy of the tiny model registered as joy's champion in a data dir of its own."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = tmp_path / "data" / "models" / "joy" / "run-abc"
    shutil.copytree(tiny, folder)
    ModelRegistry.for_data_dir(tmp_path / "data").register(
        "joy", folder, metrics={}, parent="p", data_fingerprint="x"
    )
    return tmp_path / "data", folder


def _generate(data_dir: Path, capsys) -> tuple[int, str]:
    code = cli.main(["generate", "--data-dir", str(data_dir), "--emotion", "joy", "--seed", "1"])
    return code, capsys.readouterr().err


def test_the_registry_records_each_weight_files_sha256(registered):
    data_dir, folder = registered
    record = ModelRegistry.for_data_dir(data_dir, read_only=True).get("joy")
    assert record.weights == weight_digests(folder)
    assert set(record.weights[WEIGHTS]) == {"size", "sha256"}


def test_zeroed_weights_are_refused_naming_the_file(registered, capsys):
    data_dir, folder = registered
    tensors = load_file(folder / WEIGHTS)
    save_file({k: v * 0 for k, v in tensors.items()}, folder / WEIGHTS, {"format": "pt"})
    assert (folder / WEIGHTS).stat().st_size == weight_digests(folder)[WEIGHTS]["size"]
    code, err = _generate(data_dir, capsys)
    assert code == cli.EXIT_BAD_INPUT
    assert f"weight file {folder / WEIGHTS} is damaged" in err and "emoverse run" in err
    assert "Traceback" not in err


def test_a_truncated_champion_is_refused_by_size(registered, capsys):
    data_dir, folder = registered
    raw = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(raw[: len(raw) // 2])
    code, err = _generate(data_dir, capsys)
    assert code == cli.EXIT_BAD_INPUT and "recorded)" in err and str(folder) in err


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: b"",  # empty
        lambda raw: b"\xff" * 8 + raw[8:],  # a header length that makes no sense
        lambda raw: raw[:8] + b"{not json" + raw[17:],  # a garbled header
    ],
    ids=["truncated", "empty", "bad-length", "bad-header"],
)
def test_damaged_safetensors_without_a_record_are_one_clean_error(tiny, tmp_path, damage):
    folder = tmp_path / "m"
    shutil.copytree(tiny, folder)
    (folder / WEIGHTS).write_bytes(damage((folder / WEIGHTS).read_bytes()))
    with pytest.raises(DamagedModelError, match="cannot load the model in"):
        PoemGenerator(folder)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"n_layer": 5}, "missing from the weights"),
        ({"n_layer": 3}, "not in the config"),
        ({"n_embd": 96}, "ignore_mismatched_sizes"),  # transformers names the shapes
    ],
    ids=["more-layers", "fewer-layers", "other-shape"],
)
def test_a_config_that_does_not_fit_the_weights_is_an_error(tiny, tmp_path, change, expected):
    folder = tmp_path / "m"
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["n_layer"] == 4 and config["n_embd"] == 128  # the scratch:tiny preset
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(DamagedModelError, match=expected) as info:
        PoemGenerator(folder)
    assert str(folder) in str(info.value)


def test_a_deleted_model_folder_is_missing_not_a_repo_id(registered, capsys):
    data_dir, folder = registered
    shutil.rmtree(folder)
    code, err = _generate(data_dir, capsys)
    assert code == cli.EXIT_BAD_INPUT
    assert f"model folder {folder} is missing" in err and "repo" not in err.lower()


def test_an_adapter_folder_with_a_pickle_beside_a_decoy_is_refused(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
    (folder / "decoy.safetensors").write_bytes(b"")
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(EmoverseError, match=r"adapter_model.bin\); refusing to load"):
        PoemGenerator(folder)


def test_run_trains_again_a_folder_whose_weights_no_longer_match_its_card(tiny, tmp_path):
    folder = tmp_path / "run-abc"
    shutil.copytree(tiny, folder)
    meta = {"emotion": "joy", "metrics": {}, "weights": weight_digests(folder)}
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(meta)}---\n\n# card\n")
    assert recorded_digests(folder) == meta["weights"]
    assert _saved(folder)  # whole: a rerun reuses it
    raw = bytearray((folder / WEIGHTS).read_bytes())
    raw[-100:] = bytes(100)  # same size, other bytes
    (folder / WEIGHTS).write_bytes(bytes(raw))
    assert not _saved(folder) and not folder.exists()  # removed: the stage trains it again


# --- CLI input that ends in one line ------------------------------------------------------------


def test_invalid_utf8_in_a_prompt_is_one_line(registered, capsys):
    data_dir, _ = registered
    argv = ["generate", "--data-dir", str(data_dir), "--emotion", "joy", "--prompt", "caf\udce9"]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT  # as Python hands over undecodable argv bytes
    err = capsys.readouterr().err
    assert "--prompt is not valid UTF-8 text" in err and "Traceback" not in err


@pytest.mark.parametrize("ids", ["1065,¹", "٣", "1065, ½"])
def test_non_ascii_digits_in_ids_are_one_line(tmp_path, capsys, ids):
    argv = ["ingest", "--data-dir", str(tmp_path), "--mirror", str(tmp_path), "--ids", ids]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    assert "invalid Gutenberg id" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content",
    [b"Text#,Type\n1065,Text\n\xff\xfe\x00bad\n", b"\x00\x01\x02 not a csv \x00", b"a;b\n1;2\n"],
    ids=["latin1", "binary", "other-columns"],
)
def test_a_catalog_that_is_not_a_utf8_csv_is_one_line(tmp_path, capsys, content):
    catalog = tmp_path / "catalog.csv"
    catalog.write_bytes(content)
    argv = ["ingest", "--data-dir", str(tmp_path), "--mirror", str(tmp_path)]
    assert cli.main([*argv, "--catalog", str(catalog)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"catalog {catalog} is not a" in err and "Traceback" not in err
