"""The conditional model: control tokens, training (cached, resumable), generation that never
shows a control token, evaluation per emotion, the registry's preference, the CLI and the API."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
import torch

from apps import cli
from apps.server import create_app, running_app
from emoverse.corpus import book_to_rows, write_poems
from emoverse.emotions import CONDITIONAL, CONTROL_TOKENS, EMOTIONS, LABELS, control_token
from emoverse.paths import RunPaths
from emoverse.schema import POEM_SCHEMA
from emoverse.tagging import tag_table, write_partitions
from models.config import TrainConfig, TrainingSettings
from models.folders.model_folder import load_model
from models.generation.generate import GenerationRequest, PoemGenerator
from models.records import Evaluation, TrainedModel
from models.registry.model_registry import ModelRegistry
from models.training.conditional import balanced_counts, prepare_start, train_conditional_model
from models.training.data import pack_poems
from models.training.stages import prepare_foundation

QUICK = TrainConfig(epochs=2, batch_size=8, block_size=64, learning_rate=3e-3, warmup_steps=2)
SETTINGS = TrainingSettings(max_steps=2, eval_samples=4)


@pytest.fixture(scope="module")
def data_dir(gutenberg_dir, tmp_path_factory) -> Path:
    """Blake's poems (book 574), tagged into partitions, under a data dir's usual paths."""
    paths = RunPaths(tmp_path_factory.mktemp("conditional") / "run")
    raw = (gutenberg_dir / "cache/epub/574/pg574.txt").read_bytes()
    tagged = tag_table(pa.Table.from_pylist(book_to_rows(574, raw), schema=POEM_SCHEMA))
    write_partitions(tagged, paths.partitions)
    write_poems(tagged.select(POEM_SCHEMA.names), paths.poems_file.parent)
    return paths.data_dir


@pytest.fixture(scope="module")
def foundation(data_dir) -> str:
    paths = RunPaths(data_dir)
    return prepare_foundation(
        "scratch:tiny", paths.poems_file, paths.models, QUICK.with_overrides(max_steps=3)
    )


def _train(data_dir: Path, foundation: str, **overrides) -> TrainedModel:
    paths = RunPaths(data_dir)
    trained = train_conditional_model(
        foundation,
        partitions_dir=paths.partitions,
        models_dir=paths.models,
        config=QUICK.with_overrides(**{"max_steps": 4, **overrides}),
        parent="scratch:tiny",
    )
    assert isinstance(trained, TrainedModel)
    return trained


@pytest.fixture(scope="module")
def trained(data_dir, foundation) -> TrainedModel:
    return _train(data_dir, foundation)


def test_control_tokens_start_at_their_word_and_round_trip(data_dir, foundation, trained):
    base_model, base_tokenizer = load_model(foundation)
    start = prepare_start(foundation, RunPaths(data_dir).models)
    for folder in (start, trained.path):  # the start as saved, and the trained model
        model, tokenizer = load_model(folder)
        ids = tokenizer.convert_tokens_to_ids(list(CONTROL_TOKENS))
        assert len(set(ids)) == len(LABELS) and min(ids) >= len(base_tokenizer)
        assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
        # A control token is one token, never split, and gone from decoded text.
        encoded = tokenizer("<|joy|> Tyger", add_special_tokens=False)["input_ids"]
        assert encoded[0] == tokenizer.convert_tokens_to_ids("<|joy|>")
        assert "<|" not in tokenizer.decode(encoded, skip_special_tokens=True)
        assert set(ids) <= set(model.generation_config.suppress_tokens)
    model, tokenizer = load_model(start)
    joy = tokenizer.convert_tokens_to_ids("<|joy|>")
    word = base_tokenizer(" joy", add_special_tokens=False)["input_ids"]
    expected = base_model.get_input_embeddings().weight[word].mean(dim=0)
    assert torch.allclose(model.get_input_embeddings().weight[joy], expected)
    # The old rows are untouched.
    n = len(base_tokenizer)
    assert torch.equal(
        model.get_input_embeddings().weight[:n], base_model.get_input_embeddings().weight
    )


def test_the_conditional_model_keeps_a_form(trained):
    from models.generation.form import end_word, rhymes

    generator = PoemGenerator(trained.path)
    ask = {"lines": 4, "stanzas": 2, "rhyme": "AABB"}
    request = GenerationRequest(n=3, seed=2, control="<|sadness|>", **ask)
    rows = generator.rows(request)
    generator.cohort(rows).run()
    for row in rows:
        poem = generator.text(row)
        lines = [line for line in poem.split("\n") if line.strip()]
        assert len(lines) == 4 and len(poem.split("\n\n")) == 2, poem
        assert not set(row.tokens[2:]) & set(generator.controls.values())
        if not row.form.fallbacks:
            assert rhymes(end_word(lines[0]), end_word(lines[1])), poem
            assert rhymes(end_word(lines[2]), end_word(lines[3])), poem
    assert sum(not row.form.fallbacks for row in rows) >= 2  # rhymes were within reach


def test_each_poem_is_packed_after_its_control_token(foundation, data_dir):
    _, tokenizer = load_model(prepare_start(foundation, RunPaths(data_dir).models))
    packed = pack_poems(["Tyger Tyger", "burning bright"], tokenizer, 64, ["<|joy|>", "<|fear|>"])
    stream = packed.input_ids.view(-1)[: packed.n_tokens].tolist()
    joy, fear = tokenizer.convert_tokens_to_ids(["<|joy|>", "<|fear|>"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert stream[:2] == [joy, bos] and stream.count(bos) == 4  # bos doubles as eos here
    second = stream.index(fear)
    assert stream[second - 1] == eos and stream[second + 1] == bos
    assert (packed.labels.view(-1)[[0, second]] == -100).all()  # given, never a target

    # A poem longer than a block: every block it spans opens with its control token.
    long = " ".join(["Tyger Tyger burning bright"] * 40)
    packed = pack_poems([long, "in the forests"], tokenizer, 16, ["<|joy|>", "<|fear|>"])
    firsts = packed.input_ids[:, 0].tolist()
    assert len(firsts) > 3 and firsts[:-1] == [joy] * (len(firsts) - 1)
    assert firsts[-1] in (joy, fear) and fear in packed.input_ids.view(-1).tolist()
    assert (packed.labels[:, 0] == -100).all()


def test_sqrt_balance_lifts_small_partitions_and_drops_nothing():
    counts = {"neutral": 10_000, "joy": 2_500, "surprise": 100, "disgust": 0}
    assert balanced_counts(counts, "plain") == counts
    balanced = balanced_counts(counts, "sqrt")
    assert balanced == {"neutral": 10_000, "joy": 5_000, "surprise": 1_000, "disgust": 0}


def test_a_joy_poem_starts_from_its_token_and_never_shows_one(trained):
    generator = PoemGenerator(trained.path)
    controls = set(generator.controls.values())
    joy = generator.controls["<|joy|>"]
    # Make the model want control tokens above all else: a real forward hook on its head.
    hook = generator.model.lm_head.register_forward_hook(
        lambda module, args, logits: logits.index_add(
            -1, torch.tensor(sorted(controls)), torch.full((*logits.shape[:-1], 9), 50.0)
        )
    )
    request = GenerationRequest(n=4, seed=1, max_new_tokens=12, control="<|joy|>")

    def written(suppress: tuple[int, ...]) -> tuple[list[list[int]], list[str]]:
        generator.suppress = suppress
        rows = generator.rows(request)
        assert all(row.tokens[:2] == [joy, generator.tokenizer.bos_token_id] for row in rows)
        generator.cohort(rows).run()
        return [row.tokens[2:] for row in rows], [generator.text(row) for row in rows]

    try:
        unsuppressed, texts = written(())
        # Without suppression the hooked model writes control tokens; they never show.
        assert any(t in controls for tokens in unsuppressed for t in tokens)
        assert not any("<|" in text for text in texts)
        tokens, texts = written(tuple(controls))
        assert not any(t in controls for row in tokens for t in row)
        assert all(text.strip() and "<|" not in text for text in texts)
    finally:
        hook.remove()


def test_a_rerun_trains_nothing_and_other_settings_train_again(data_dir, foundation, trained):
    again = _train(data_dir, foundation)
    assert again.cached and again.path == trained.path
    assert again.metrics["steps"] == trained.metrics["steps"] == 4
    assert trained.metrics["label_poems"]["joy"] >= trained.metrics["label_poems"]["anger"]
    plain = train_conditional_model(
        foundation,
        partitions_dir=RunPaths(data_dir).partitions,
        models_dir=RunPaths(data_dir).models,
        config=QUICK.with_overrides(max_steps=4),
        parent="scratch:tiny",
        balance="plain",
    )
    assert not plain.cached and plain.path != trained.path
    assert plain.metrics["train_poems"] < trained.metrics["train_poems"]


RESUMABLE_RUN = """
import json, sys
from pathlib import Path
from models.training.conditional import train_conditional_model
from models.config import TrainConfig
data_dir, models_dir, foundation = sys.argv[1:4]
steps = []
trained = train_conditional_model(
    foundation, partitions_dir=Path(data_dir) / "partitions", models_dir=Path(models_dir),
    config=TrainConfig(**json.loads(sys.argv[4])), parent="scratch:tiny",
    on_step=lambda step, total, loss: steps.append(step))
print(json.dumps({"first_step": steps[0] if steps else None, "path": trained.path}))
"""


@pytest.mark.slow
def test_a_killed_conditional_run_resumes_to_the_same_weights(data_dir, foundation, tmp_path):
    from safetensors.torch import load_file

    config = QUICK.with_overrides(max_steps=60, batch_size=4, checkpoint_every=3)

    def run(models_dir: Path) -> subprocess.Popen:
        args = [str(data_dir), str(models_dir), foundation, json.dumps(config.to_dict())]
        return subprocess.Popen(
            [sys.executable, "-c", RESUMABLE_RUN, *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            text=True,
        )

    def finish(process: subprocess.Popen) -> dict:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0
        return json.loads(out.strip().splitlines()[-1])

    victim = run(tmp_path / "a")
    deadline = time.monotonic() + 120
    while not list((tmp_path / "a" / CONDITIONAL).glob(".checkpoint-*/checkpoint.pt")):
        assert victim.poll() is None, "training finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    (checkpoint,) = (tmp_path / "a" / CONDITIONAL).glob(".checkpoint-*/checkpoint.pt")
    killed_at = torch.load(checkpoint, weights_only=True)["loop"]["step"]
    resumed = finish(run(tmp_path / "a"))
    fresh = finish(run(tmp_path / "b"))
    assert resumed["first_step"] == killed_at + 1 and fresh["first_step"] == 1
    assert Path(resumed["path"]).name == Path(fresh["path"]).name  # one run key
    a = load_file(Path(resumed["path"]) / "model.safetensors")
    b = load_file(Path(fresh["path"]) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def both(prefect_harness, data_dir, foundation) -> dict:
    """The family and the conditional model through the real flows, few steps each."""
    from flows.training import train_by_mode

    return train_by_mode(str(data_dir), SETTINGS, "both")


def test_both_modes_register_the_conditional_model_beside_the_family(data_dir, both):
    registry = ModelRegistry.for_data_dir(data_dir)
    assert both["registered"][CONDITIONAL] == 1 and both["registered"]["neutral"] == 1
    record = registry.get(CONDITIONAL, version=1) if CONDITIONAL in both["champions"] else None
    record = record or registry.list(CONDITIONAL)[-1]
    assert record.parent == "scratch:tiny"  # the same start as the neutral base
    assert set(record.metrics["evaluations"]) == set(EMOTIONS)
    for emotion in EMOTIONS:
        evaluation = record.metrics["evaluations"][emotion]
        assert evaluation["emotion"] == emotion and evaluation["n_samples"] == 4
        assert set(evaluation["judges"]) == {"nrc", "empath", "nade"}
        assert evaluation["judges"]["nrc"]["base"]["n"] == 4  # compared with the base
        preferred = registry.preferred(emotion)
        assert preferred["model"] in ("family", "conditional")
        assert preferred["conditional_version"] == record.version
        if preferred["model"] == "family":
            assert preferred["version"] == registry.current(emotion)[0].version
            assert "kept" in preferred["reason"]
        assert (Path(record.path) / f"evaluation-{emotion}.json").is_file()
    skipped = set(both["skipped"])  # partitions without train poems have no child
    assert all(registry.preferred(e)["model"] == "conditional" for e in skipped)

    from emoverse.judgements import JudgementStore
    from models.reports.family import write_family_report

    paths = RunPaths(data_dir)
    report = write_family_report(
        registry, JudgementStore(paths.judgements_db), paths.partitions, paths.report
    ).read_text()
    assert f"## The conditional model: emoverse-conditional v{record.version}" in report
    assert f"| joy | conditional v{record.version} |" in report
    assert "| family: base and" in report and f"| conditional v{record.version} | 2 |" in report

    # The Prefect UI's newest family report, published after the comparison, has it too.
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        (newest,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["family-report"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert f"## The conditional model: emoverse-conditional v{record.version}" in newest.data


def test_the_report_shows_the_version_the_preferences_were_recorded_against(
    data_dir, both, tmp_path
):
    """A newer conditional model that did not become champion still speaks for `best`: the
    report shows its figures, beside the children it was compared with, and names both."""
    import shutil

    from emoverse.judgements import JudgementStore
    from models.generation.choice import record_preferences
    from models.reports.family import write_family_report

    copy = tmp_path / "data"  # a copy, so that the module's registry stays as it is
    shutil.copytree(data_dir, copy)
    registry = ModelRegistry.for_data_dir(copy)
    champion = registry.promote(CONDITIONAL, registry.current(CONDITIONAL)[0].version)
    folder = Path(champion.path).with_name("run-newer")
    shutil.copytree(champion.path, folder)
    newer = registry.register(
        CONDITIONAL,
        folder,
        metrics={**champion.metrics, "balance": "plain"},
        parent=champion.parent,
        data_fingerprint="newer",
        promote=False,
    )
    evaluations = {e: Evaluation.from_dict(d) for e, d in champion.metrics["evaluations"].items()}
    record_preferences(registry, newer, evaluations)
    paths = RunPaths(copy)
    report = write_family_report(
        registry, JudgementStore(paths.judgements_db), paths.partitions, paths.report
    ).read_text()
    assert newer.version != champion.version
    assert (
        f"## The conditional model: emoverse-conditional v{newer.version} (compared with the "
        f"children; `--model conditional` uses v{champion.version})" in report
    )
    assert f"| joy | conditional v{newer.version} |" in report
    assert f"| joy | conditional v{champion.version} |" not in report


def test_a_conditional_rerun_trains_nothing(data_dir, both):
    from flows.training import train_conditional

    again = train_conditional(str(data_dir), settings=SETTINGS)
    assert again["cached"] and again["registered"] == {CONDITIONAL: 1}
    assert [r.version for r in ModelRegistry.for_data_dir(data_dir).list(CONDITIONAL)] == [1]


def _generate(data_dir: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = cli.main(
        ["generate", "--data-dir", str(data_dir), "--max-new-tokens", "12", "--seed", "3", *extra]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_generates_with_the_conditional_model_and_follows_best(data_dir, both, capsys):
    code, out, err = _generate(data_dir, capsys, "--emotion", "joy", "--model", "conditional")
    assert code == 0 and out.strip() and "<|" not in out
    assert "emoverse-conditional v1 as joy" in err

    registry = ModelRegistry.for_data_dir(data_dir)
    joy_child = registry.current("joy")[0].version
    compared = {"version": 1, "child_version": joy_child}
    registry.set_preferred("joy", {**compared, "model": "conditional", "reason": "test: c"})
    code, out, err = _generate(data_dir, capsys, "--emotion", "joy", "--model", "best")
    assert code == 0 and "emoverse-conditional v1 as joy" in err and "test: c" in err
    conditional_poem = out
    registry.set_preferred("joy", {**compared, "model": "family", "reason": "test: f"})
    code, out, err = _generate(data_dir, capsys, "--emotion", "joy", "--model", "best")
    assert code == 0 and f"emoverse-joy v{joy_child}" in err and "test: f" in err
    assert out != conditional_poem
    # A comparison with another child than the current one (the family trained again since)
    # says nothing of this one: the family's own model, and why.
    stale = {**compared, "child_version": joy_child + 1}
    registry.set_preferred("joy", {**stale, "model": "conditional", "reason": "test: c"})
    code, out, err = _generate(data_dir, capsys, "--emotion", "joy", "--model", "best")
    assert code == 0 and f"emoverse-joy v{joy_child}" in err and "compares them again" in err

    code, _, err = _generate(
        data_dir, capsys, "--emotion", "joy", "--model", "conditional", "--strength", "0.5"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--strength" in err
    code, _, err = _generate(data_dir, capsys, "--blend", "joy=0.5", "--model", "best")
    assert code == 2 and "--model best" in err
    with pytest.raises(SystemExit) as bad:
        _generate(data_dir, capsys, "--emotion", "joy", "--model", "nope")
    assert bad.value.code == 2


def test_the_api_takes_a_model_choice(data_dir, both):
    registry = ModelRegistry.for_data_dir(data_dir)
    child = registry.current("sadness")[0].version
    registry.set_preferred(
        "sadness",
        {"model": "conditional", "version": 1, "child_version": child, "reason": "test"},
    )
    with running_app(create_app(data_dir)) as url, httpx.Client(base_url=url, timeout=60) as http:
        body = {"emotion": "sadness", "seed": 3, "max_new_tokens": 12}
        own = http.post("/generate", json=body).json()
        conditional = http.post("/generate", json={**body, "model": "conditional"}).json()
        best = http.post("/generate", json={**body, "model": "best"}).json()
        assert own["model"] == "emoverse-sadness" and own["emotion"] == "sadness"
        assert conditional["model"] == "emoverse-conditional"
        assert conditional["emotion"] == "sadness"
        assert best["model"] == "emoverse-conditional" and best["poems"] == conditional["poems"]
        assert "<|" not in conditional["poems"][0]
        for bad, field in (
            ({**body, "model": "nope"}, "model"),
            ({**body, "model": "conditional", "strength": 0.5}, "strength"),
            ({"blend": {"joy": 0.5}, "model": "best"}, "blend"),
        ):
            answer = http.post("/generate", json=bad)
            assert answer.status_code == 422 and field in answer.json()["message"]
        # The page offers "conditional" and "best" from what GET /models says exists.
        assert http.get("/models").json()["conditional"]["version"] == 1


def test_control_token_names_are_checked():
    assert control_token("joy") == "<|joy|>"
    with pytest.raises(Exception, match="unknown emotion 'conditional'"):
        control_token(CONDITIONAL)
