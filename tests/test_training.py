"""Training: packing, the loop on real poems, saved folders, generation, the stage function."""

import json
import math
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from emoverse.corpus import book_to_rows, write_poems
from emoverse.schema import POEM_SCHEMA
from emoverse.tagging import split_for, tag_table, write_partitions
from models.config import TrainConfig
from models.folders.card import CARD_FILE, LOSS_PLOT_FILE, read_card_metadata, save_model
from models.folders.model_folder import build_scratch_model, load_model
from models.generation.generate import generate_poems
from models.records import SkippedModel, TrainedModel
from models.training.data import IGNORE_INDEX, load_partition, pack_poems
from models.training.loop import fine_tune, lr_at
from models.training.stages import prepare_foundation, train_emotion_model

QUICK = TrainConfig(epochs=2, batch_size=8, block_size=64, learning_rate=3e-3, warmup_steps=2)


@pytest.fixture(scope="module")
def sonnets(gutenberg_dir) -> list[str]:
    raw = (gutenberg_dir / "cache/epub/1041/pg1041.txt").read_bytes()
    return [row["text"] for row in book_to_rows(1041, raw)]


@pytest.fixture(scope="module")
def init_dir(sonnets, tmp_path_factory):
    return build_scratch_model("scratch:tiny", sonnets, tmp_path_factory.mktemp("m") / "init")


def test_scratch_tiny_is_a_small_gpt2_with_a_corpus_tokenizer(init_dir, sonnets):
    model, tokenizer = load_model(init_dir)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n_params <= 2_000_000
    assert model.config.model_type == "gpt2"
    # A tokenizer trained on the sonnets encodes them in far fewer tokens than bytes.
    text = sonnets[17]
    assert len(tokenizer(text)["input_ids"]) < len(text.encode()) / 2.5
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_pack_poems_wastes_no_compute_on_padding(init_dir, sonnets):
    _, tokenizer = load_model(init_dir)
    texts = sonnets[:20]
    packed = pack_poems(texts, tokenizer, block_size=64)
    lengths = [len(ids) + 2 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert packed.n_tokens == sum(lengths)
    assert len(packed) == math.ceil(sum(lengths) / 64)
    flat_ids, flat_labels = packed.input_ids.view(-1), packed.labels.view(-1)
    # Every poem is framed by the boundary token; only the tail of the last block is padding.
    assert int((flat_ids == tokenizer.bos_token_id).sum()) == 2 * len(texts)
    assert torch.equal(flat_labels[: packed.n_tokens], flat_ids[: packed.n_tokens])
    assert bool((flat_labels[packed.n_tokens :] == IGNORE_INDEX).all())


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(learning_rate=1.0, warmup_steps=4, min_lr_ratio=0.1)
    lrs = [lr_at(s, 20, cfg) for s in range(20)]
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in pairwise(lrs[3:]))
    assert lr_at(20, 20, cfg) == pytest.approx(0.1)


def test_fine_tune_learns_and_keeps_the_best_epoch(init_dir, sonnets):
    tuned = fine_tune(init_dir, sonnets[:140], sonnets[140:], QUICK.with_overrides(epochs=3))
    curve = [loss for _, loss in tuned.train_curve]
    assert curve[-1] < curve[0] - 1.0  # a real drop from ~ln(vocab) nats
    assert tuned.metrics["val_loss"] == pytest.approx(min(v for _, v in tuned.val_curve), abs=1e-4)
    assert tuned.metrics["train_poems"] == 140 and tuned.metrics["val_poems"] == len(sonnets) - 140


def test_fine_tune_is_deterministic_for_a_seed(init_dir, sonnets):
    cfg = QUICK.with_overrides(max_steps=3)
    a = fine_tune(init_dir, sonnets[:40], [], cfg)
    b = fine_tune(init_dir, sonnets[:40], [], cfg)
    assert a.train_curve == b.train_curve
    assert a.metrics["val_loss"] is None  # no validation poems: chosen on training loss


def test_saved_model_is_a_safetensors_hf_folder_with_a_card(init_dir, sonnets, tmp_path):
    tuned = fine_tune(init_dir, sonnets[:40], sonnets[40:50], QUICK.with_overrides(max_steps=4))
    out = save_model(
        tuned,
        tmp_path / "joy",
        emotion="joy",
        parent="base v1",
        data_fingerprint="f" * 64,
        config=QUICK,
    )
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "generation_config.json",
        CARD_FILE,
        LOSS_PLOT_FILE,
    } <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    meta = read_card_metadata(out)
    assert meta["emotion"] == "joy" and meta["parent_model"] == "base v1"
    assert meta["data_fingerprint"] == "f" * 64
    assert meta["training_metrics"]["steps"] == 4
    assert json.loads((out / "training_history.json").read_text())["train"]
    assert (out / LOSS_PLOT_FILE).read_bytes()[:4] == b"\x89PNG"


def test_generation_is_deterministic_for_a_seed(init_dir):
    a = generate_poems(init_dir, prompt="Shall I", n=2, seed=7, max_new_tokens=12)
    b = generate_poems(init_dir, prompt="Shall I", n=2, seed=7, max_new_tokens=12)
    c = generate_poems(init_dir, prompt="Shall I", n=2, seed=8, max_new_tokens=12)
    assert a == b and a != c
    assert all(p.startswith("Shall I") for p in a)


def test_stage_trains_from_partitions_and_skips_small_ones(gutenberg_dir, tmp_path):
    raw = (gutenberg_dir / "cache/epub/574/pg574.txt").read_bytes()
    tagged = tag_table(pa.Table.from_pylist(book_to_rows(574, raw), schema=POEM_SCHEMA))
    counts = write_partitions(tagged, tmp_path / "partitions")
    poems_file = write_poems(tagged.select(POEM_SCHEMA.names), tmp_path / "poems")
    foundation = QUICK.with_overrides(max_steps=3)
    init = prepare_foundation("scratch:tiny", poems_file, tmp_path / "models", foundation)
    assert read_card_metadata(init)["training_metrics"]["steps"] == 3  # pretrained, not just init
    assert read_card_metadata(init)["training_metrics"]["train_poems"] == sum(
        split_for(p) == "train" for p in tagged.column("poem_id").to_pylist()
    )
    again = prepare_foundation("scratch:tiny", poems_file, tmp_path / "models", foundation)
    assert again == init
    assert not list((tmp_path / "models" / "foundation").glob(".checkpoint-*"))

    def train_joy() -> TrainedModel | SkippedModel:
        return train_emotion_model(
            "joy",
            init,
            partitions_dir=tmp_path / "partitions",
            models_dir=tmp_path / "models",
            config=QUICK.with_overrides(max_steps=2),
            parent="scratch:tiny",
        )

    joy = train_joy()
    assert isinstance(joy, TrainedModel)
    assert (
        len(load_partition(tmp_path / "partitions", "joy", "train")) == joy.metrics["train_poems"]
    )
    assert read_card_metadata(joy.path)["data_fingerprint"] == joy.data_fingerprint
    assert not joy.cached
    # The same start, data and settings again: the folder is reused, nothing is trained.
    joy_again = train_joy()
    assert joy_again.cached and joy_again.path == joy.path
    assert joy_again.metrics == joy.metrics

    too_many = counts["joy"] + 1
    skipped = train_emotion_model(
        "joy",
        init,
        partitions_dir=tmp_path / "partitions",
        models_dir=tmp_path / "models",
        config=QUICK,
        parent="scratch:tiny",
        min_poems=too_many,
    )
    assert isinstance(skipped, SkippedModel)
    assert skipped.reason.endswith(f"fewer than min_poems = {too_many}")  # the field's name


RESUMABLE_RUN = """
import json, sys
from pathlib import Path
from models.config import TrainConfig
from models.training.loop import fine_tune
init, texts_file, ckpt, out = sys.argv[1:5]
texts = json.loads(Path(texts_file).read_text())
config = TrainConfig(**json.loads(sys.argv[5]))
steps_here = []
tuned = fine_tune(init, texts[:60], texts[60:70], config, checkpoint_dir=Path(ckpt),
                  on_step=lambda step, total, loss: steps_here.append(step))
tuned.model.save_pretrained(out)
print(json.dumps({"first_step": steps_here[0], "steps_here": len(steps_here),
                  "total": tuned.metrics["steps"]}))
"""


def test_a_killed_run_resumes_to_the_same_weights(init_dir, sonnets, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    config = QUICK.with_overrides(epochs=3, batch_size=4, checkpoint_every=2)  # 12 steps/epoch
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(sonnets))
    ckpt = tmp_path / "ckpt"

    def run(checkpoint_dir, out):
        args = [
            str(init_dir),
            str(texts),
            str(checkpoint_dir),
            str(out),
            json.dumps(config.to_dict()),
        ]
        return subprocess.Popen(
            [sys.executable, "-c", RESUMABLE_RUN, *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            text=True,
        )

    def finish(process) -> dict:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0
        return json.loads(out.strip().splitlines()[-1])

    victim = run(ckpt, tmp_path / "never")
    deadline = time.monotonic() + 120
    while not (ckpt / "checkpoint.pt").exists():
        assert victim.poll() is None, "training finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "never").exists()
    killed_at = torch.load(ckpt / "checkpoint.pt", weights_only=True)["loop"]["step"]
    assert 0 < killed_at < 36

    resumed_run = finish(run(ckpt, tmp_path / "resumed"))
    full_run = finish(run(tmp_path / "fresh-ckpt", tmp_path / "uninterrupted"))
    # The rerun picked up after the checkpoint instead of starting over.
    assert resumed_run["first_step"] == killed_at + 1
    assert resumed_run["steps_here"] == full_run["total"] - killed_at
    assert resumed_run["total"] == full_run["total"] == full_run["steps_here"]
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    uninterrupted = load_file(tmp_path / "uninterrupted" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_a_lora_child_is_small_and_loads_like_a_full_one(init_dir, sonnets, tmp_path):
    from safetensors.torch import load_file

    from models.registry.model_registry import ModelRegistry

    config = QUICK.with_overrides(max_steps=4, adapter="lora", learning_rate=1e-2)
    tuned = fine_tune(init_dir, sonnets[:40], sonnets[40:50], config)
    out = save_model(
        tuned,
        tmp_path / "joy-lora",
        emotion="joy",
        parent=str(init_dir),
        data_fingerprint="f" * 64,
        config=config,
    )
    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    full = (init_dir / "model.safetensors").stat().st_size
    assert (out / "adapter_model.safetensors").stat().st_size < full / 5
    assert read_card_metadata(out)["adapter"] == "lora"

    # Loaded through the same path as any model: base + adapter, merged.
    merged, _ = load_model(out)
    base, _ = load_model(init_dir)
    changed = [
        name
        for name, w in merged.state_dict().items()
        if not torch.equal(w, base.state_dict()[name])
    ]
    assert changed and all(("c_attn" in n or "c_proj" in n or "c_fc" in n) for n in changed)

    registry = ModelRegistry.for_data_dir(tmp_path)
    registry.register("joy", out, metrics=tuned.metrics, parent="base", data_fingerprint="f")
    poems = generate_poems(
        registry.get("joy").path, prompt="Shall I", n=1, seed=1, max_new_tokens=10
    )
    assert poems[0].startswith("Shall I") and len(poems[0]) > len("Shall I")


def test_unknown_settings_fail_clearly():
    from emoverse.errors import EmoverseError

    with pytest.raises(EmoverseError, match="adapter should be 'lora', got 'qlora'"):
        QUICK.with_overrides(adapter="qlora")
    with pytest.raises(EmoverseError, match=r"unknown training setting.*bach_size"):
        QUICK.with_overrides(bach_size=4)


def test_a_bad_setting_is_named_by_its_field_and_the_cli_names_its_flag(tmp_path, capsys):
    from pydantic import ValidationError

    from apps import cli
    from models.config import TrainingSettings, setting_error

    with pytest.raises(ValidationError) as caught:
        TrainingSettings(batch_size=0)
    # What a flow (and so the UI) says: the field, as the run form names it.
    assert str(setting_error(caught.value)) == (
        "batch_size should be greater than or equal to 1, got 0"
    )
    # The CLI says the same with its flag.
    argv = ["train", "--batch-size", "0", "--data-dir", str(tmp_path / "run")]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err == (
        "emoverse: error: --batch-size should be greater than or equal to 1, got '0'\n"
    )


def test_a_stage_trains_data_parallel_under_torchrun(gutenberg_dir, init_dir, tmp_path):
    """Two CPU processes over gloo: each step takes one batch per process, so an epoch is
    half as many steps, and only rank 0 writes the model folder."""
    import subprocess
    import sys

    raw = (gutenberg_dir / "cache/epub/574/pg574.txt").read_bytes()
    tagged = tag_table(pa.Table.from_pylist(book_to_rows(574, raw), schema=POEM_SCHEMA))
    write_partitions(tagged, tmp_path / "partitions")
    joy = list(load_partition(tmp_path / "partitions", "joy", "train")["text"])
    _, tokenizer = load_model(init_dir)
    n_blocks = len(pack_poems(joy, tokenizer, QUICK.block_size))

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "models.training.stages",
            "--emotion",
            "joy",
            "--init",
            str(init_dir),
            "--data-dir",
            str(tmp_path),
            "--set",
            "epochs=1",
            f"batch_size={QUICK.batch_size}",
            f"block_size={QUICK.block_size}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["metrics"]["processes"] == 2
    assert record["metrics"]["steps"] == math.ceil(n_blocks / (2 * QUICK.batch_size))
    assert [p.name for p in (tmp_path / "models" / "joy").iterdir()] == [Path(record["path"]).name]
    assert read_card_metadata(record["path"])["emotion"] == "joy"


def test_stage_keys_name_stored_data_as_before_and_reuse_skips_the_build(tmp_path):
    from emoverse.done import reuse_or_build, stage_key

    # The keys that name existing folders: the same inputs must keep giving the same key.
    assert stage_key(["dir:init", "fp", {"b": 1, "a": 2}], 12) == "4fcdc132c141"
    assert stage_key(["1", [3, "/m/neutral"], [["joy", 2, "/m/joy", 0.7]]], 16) == (
        "beefb1d6ea8070c9"
    )
    built: list[Path] = []

    def build(out: Path) -> None:
        built.append(out)
        out.mkdir()

    out = tmp_path / "stage"
    assert reuse_or_build(out, build, done=Path.is_dir) is False
    assert reuse_or_build(out, build, done=Path.is_dir) is True
    assert built == [out]
