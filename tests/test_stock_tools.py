"""What the stock Hugging Face tools make of our folders: the partitions read by
`datasets.load_dataset` and `huggingface_hub.DatasetCard`, model folders by
`transformers.pipeline` and `huggingface_hub.ModelCard`."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Features, load_dataset
from huggingface_hub import DatasetCard

from emoverse.corpus import book_to_rows
from emoverse.emotions import LABELS
from emoverse.schema import POEM_SCHEMA, TAGGED_SCHEMA
from emoverse.tagging import SPLITS, read_manifest, read_partitions, tag_poems, write_partitions

BOOKS = (574, 1065, 12242)  # Blake, The Raven, Dickinson: every label, some splits empty


@pytest.fixture(scope="module")
def tagged_dir(gutenberg_dir, tmp_path_factory) -> Path:
    """Partitions written by the real tag stage from a poems file of three mirror books."""
    root = tmp_path_factory.mktemp("tagged")
    rows = []
    for book in BOOKS:
        raw = (gutenberg_dir / f"cache/epub/{book}/pg{book}.txt").read_bytes()
        rows += book_to_rows(book, raw)
    pq.write_table(pa.Table.from_pylist(rows, schema=POEM_SCHEMA), root / "poems.parquet")
    tag_poems(root / "poems.parquet", root / "partitions", workers=1)
    return root / "partitions"


def _rows_per_split(manifest: dict, labels: tuple[str, ...] | list[str]) -> dict[str, int]:
    totals = {s: sum(manifest["splits"][label][s] for label in labels) for s in SPLITS}
    return {s: n for s, n in totals.items() if n}


def test_load_dataset_reads_the_partitions_folder_through_its_card(tagged_dir, tmp_path):
    manifest = read_manifest(tagged_dir)
    everything = load_dataset(str(tagged_dir), cache_dir=str(tmp_path))  # the default: all
    assert {s: len(everything[s]) for s in everything} == _rows_per_split(manifest, LABELS)
    # The card's schema is the files' schema, column for column.
    assert everything["train"].features == Features.from_arrow_schema(TAGGED_SCHEMA)
    expected = read_partitions(tagged_dir)
    got = sorted(pid for s in everything for pid in everything[s]["poem_id"])
    assert got == sorted(expected.column("poem_id").to_pylist())
    for label in LABELS:
        if not manifest["counts"][label]:
            continue
        one = load_dataset(str(tagged_dir), label, cache_dir=str(tmp_path))
        assert {s: len(one[s]) for s in one} == _rows_per_split(manifest, [label])
        for split in one:
            assert set(one[split]["label"]) == {label}  # every row carries its label
            assert set(one[split]["split"]) == {split}


def test_schema_only_files_are_read_and_empty_splits_left_out_of_the_card(tagged_dir, tmp_path):
    manifest = read_manifest(tagged_dir)
    empty = [(lb, s) for lb in LABELS for s in SPLITS if not manifest["splits"][lb][s]]
    assert empty, "the books no longer leave a split empty: pick others"
    for label, split in empty:
        meta = pq.ParquetFile(tagged_dir / f"emotion={label}" / f"{split}.parquet").metadata
        assert meta.num_rows == 0 and meta.num_row_groups == 0
    card = DatasetCard.load(tagged_dir / "README.md")
    configs = {c["config_name"]: c for c in card.data.to_dict()["configs"]}
    label, split = empty[0]
    if label in configs:  # a label with poems, but none in this split
        assert split not in {f["split"] for f in configs[label]["data_files"]}
    # `all` lists every label's file of a split, schema-only ones too, and datasets reads them.
    assert all(len(f["path"]) == len(LABELS) for f in configs["all"]["data_files"])


def test_load_dataset_parquet_with_data_dir_finds_the_splits_by_file_name(tagged_dir, tmp_path):
    manifest = read_manifest(tagged_dir)
    loaded = load_dataset("parquet", data_dir=str(tagged_dir), cache_dir=str(tmp_path))
    # `_manifest.json` and the card are not read as data.
    assert {s: len(loaded[s]) for s in loaded} == _rows_per_split(manifest, LABELS)
    for split in loaded:
        assert set(loaded[split]["split"]) == {split}


def test_the_dataset_card_carries_the_hub_fields(tagged_dir):
    manifest = read_manifest(tagged_dir)
    card = DatasetCard.load(tagged_dir / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["license_name"] == "nrc-emotion-lexicon"
    assert data["license_link"].startswith("https://")
    assert data["language"] == ["en"] and "text-generation" in data["task_categories"]
    configs = data["configs"]
    assert configs[0]["config_name"] == "all" and configs[0]["default"] is True
    with_poems = [label for label in LABELS if manifest["counts"][label]]
    assert [c["config_name"] for c in configs[1:]] == with_poems
    infos = {i["config_name"]: i for i in data["dataset_info"]}
    assert set(infos) == {c["config_name"] for c in configs}
    assert [f["name"] for f in infos["all"]["features"]] == TAGGED_SCHEMA.names
    joy = {s["name"]: s["num_examples"] for s in infos["joy"]["splits"]}
    assert joy == _rows_per_split(manifest, ["joy"])
    # The text: counts per label, the licence terms, how it was tagged.
    assert "non-commercial" in card.text and "NRC Emotion Lexicon" in card.text
    total = sum(manifest["counts"].values())
    assert f"| **total** | {total:,} |" in card.text
    for label in LABELS:
        assert f"| {label} | {manifest['counts'][label]:,} |" in card.text


def test_a_label_without_poems_has_no_config_and_the_rest_still_load(tagged_dir, tmp_path):
    rows = read_partitions(tagged_dir)
    kept = rows.filter(pa.compute.not_equal(rows.column("label"), "surprise"))
    target = tmp_path / "partitions"
    write_partitions(kept, target)
    card = DatasetCard.load(target / "README.md")
    names = [c["config_name"] for c in card.data.to_dict()["configs"]]
    assert "surprise" not in names and "joy" in names
    assert "No poems this time, so no config: surprise." in card.text
    loaded = load_dataset(str(target), cache_dir=str(tmp_path / "cache"))
    assert sum(len(loaded[s]) for s in loaded) == kept.num_rows


# --- model folders ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sonnets(gutenberg_dir) -> list[str]:
    raw = (gutenberg_dir / "cache/epub/1041/pg1041.txt").read_bytes()
    return [row["text"] for row in book_to_rows(1041, raw)]


@pytest.fixture(scope="module")
def scratch_dir(sonnets, tmp_path_factory) -> Path:
    from models.folders.model_folder import build_scratch_model

    return build_scratch_model("scratch:tiny", sonnets, tmp_path_factory.mktemp("m") / "init")


@pytest.fixture(scope="module")
def child_dir(scratch_dir, sonnets, tmp_path_factory) -> Path:
    """A joy child saved by the training code, its evaluation added as the pipeline adds it."""
    from models.config import TrainConfig
    from models.folders.card import add_evaluation_to_card, save_model
    from models.records import Evaluation
    from models.training.loop import fine_tune

    config = TrainConfig(max_steps=2, batch_size=8, block_size=64, warmup_steps=1)
    tuned = fine_tune(scratch_dir, sonnets[:40], sonnets[40:50], config)
    out = save_model(
        tuned,
        tmp_path_factory.mktemp("m") / "joy",
        emotion="joy",
        parent="emoverse-neutral v3",
        data_fingerprint="f" * 64,
        config=config,
    )
    counts = dict.fromkeys(LABELS, 0) | {"joy": 20, "neutral": 44}
    evaluation = Evaluation(
        emotion="joy",
        perplexity={"joy": 210.4, "neutral": 250.0, "anger": None},
        test_poems={"joy": 5, "neutral": 7, "anger": 0},
        label_shares={label: n / 64 for label, n in counts.items()},
        fidelity=20 / 64,
        lift=0.1875,
        distinct_1=0.5,
        distinct_2=0.9,
        samples=[],
        config_key="k",
        n_samples=64,
        label_counts={"nrc": counts, "empath": dict(counts)},
    )
    add_evaluation_to_card(out, evaluation.to_dict(), "fidelity beats the base", promoted=True)
    return out


def test_the_tokenizer_knows_the_models_context(scratch_dir, child_dir):
    from transformers import AutoConfig, AutoTokenizer

    for folder in (scratch_dir, child_dir):
        context = AutoConfig.from_pretrained(folder).n_positions
        assert context == 256  # scratch:tiny
        assert AutoTokenizer.from_pretrained(folder).model_max_length == context


def test_a_folder_saved_before_the_fix_loads_with_the_context(scratch_dir, tmp_path):
    import json
    import shutil

    from models.folders.model_folder import load_model

    old = Path(shutil.copytree(scratch_dir, tmp_path / "old"))
    config = json.loads((old / "tokenizer_config.json").read_text())
    config["model_max_length"] = int(1e30)  # what folders said before
    (old / "tokenizer_config.json").write_text(json.dumps(config))
    model, tokenizer = load_model(old)
    assert tokenizer.model_max_length == model.config.n_positions == 256


def test_the_stock_pipeline_generates_within_the_context(child_dir, sonnets):
    from transformers import AutoTokenizer, pipeline

    pipe = pipeline("text-generation", model=str(child_dir))
    context = AutoTokenizer.from_pretrained(child_dir).model_max_length
    prompt = "\n\n".join(sonnets[:6])  # longer than the context
    assert len(pipe.tokenizer(prompt)["input_ids"]) > context
    # transformers 5 keeps the prompt's last tokens so that prompt + new tokens fit the
    # context (`hole`), by the tokenizer's model_max_length: at 1e30 nothing was cut and the
    # position embeddings raised IndexError.
    out = pipe(prompt, max_new_tokens=40, handle_long_generation="hole", return_full_text=False)
    assert isinstance(out[0]["generated_text"], str)
    # More new tokens than the context: a clear error naming the cause, not an IndexError.
    # (Without `hole`, transformers 5 generates past the context whatever the folder says:
    # its max-length check only warns.)
    with pytest.raises(ValueError, match="exceeds the models max length"):
        pipe("Shall I", max_new_tokens=context + 10, handle_long_generation="hole")


def test_the_model_card_parses_into_the_hubs_fields(child_dir, scratch_dir):
    from huggingface_hub import EvalResult, ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results
    from huggingface_hub.utils import validate_repo_id

    from emoverse.tagging.card import DATASET_ID

    # ModelCard.validate() asks the Hub; offline the strongest checks are the library's own
    # parsing (ModelCardData turns model-index into EvalResult objects, raising on a bad one)
    # and its repo-id validator on every field that names a repository.
    card = ModelCard.load(child_dir / "README.md")
    data = card.data
    assert data.base_model == "emoverse-neutral" and data.datasets == [DATASET_ID]
    for repo_id in (data.base_model, *data.datasets):
        validate_repo_id(repo_id)
    assert data.license == "other" and data.license_name == "nrc-emotion-lexicon"
    assert data.pipeline_tag == "text-generation" and data.library_name == "transformers"
    assert "emotion-joy" in data.tags and data.metrics == ["perplexity"]
    assert data.model_name == "emoverse-joy"
    assert data.to_dict()["parent_model"] == "emoverse-neutral v3"  # the exact lineage
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == "emoverse-joy" and all(isinstance(r, EvalResult) for r in results)
    assert results == data.eval_results
    joy = next(r for r in results if r.dataset_config == "joy")
    assert (joy.metric_type, joy.metric_value, joy.dataset_type, joy.dataset_split) == (
        "perplexity",
        210.4,
        DATASET_ID,
        "test",
    )
    assert {r.dataset_config for r in results if r.metric_type == "perplexity"} >= {
        "joy",
        "neutral",
    }  # no result for anger: it had no test poems
    assert "anger" not in {r.dataset_config for r in results}
    fidelity = next(r for r in results if r.metric_name == "fidelity")
    assert fidelity.metric_value == 0.3125


@pytest.mark.parametrize(
    "emotion, parent, base_model",
    [
        ("foundation", "scratch:tiny", None),  # trained from scratch: no base model
        ("neutral", "scratch:tiny", "emoverse-foundation"),  # fine-tuned from the foundation
        ("neutral", "gpt2", "gpt2"),  # fine-tuned from a Hub model
        ("fear", "emoverse-neutral v12", "emoverse-neutral"),
    ],
)
def test_base_model_names_the_parent_on_the_hub(emotion, parent, base_model):
    from huggingface_hub import ModelCard

    from models.config import TrainConfig
    from models.folders.card import model_card

    text = model_card(
        emotion=emotion,
        parent=parent,
        data_fingerprint="f" * 64,
        metrics={"steps": 1},
        config=TrainConfig(),
        n_parameters=1,
    )
    data = ModelCard(text).data
    assert data.base_model == base_model
    assert data.to_dict()["parent_model"] == parent
    assert data.to_dict()["training_metrics"] == {"steps": 1}


def test_a_recorded_parent_version_names_the_base_model_without_parsing():
    from huggingface_hub import ModelCard

    from models.config import TrainConfig
    from models.folders.card import model_card

    text = model_card(
        emotion="fear",
        parent="emoverse-neutral v12",
        parent_version=12,
        data_fingerprint="f" * 64,
        metrics={"steps": 1},
        config=TrainConfig(),
        n_parameters=1,
    )
    data = ModelCard(text).data.to_dict()
    assert data["base_model"] == "emoverse-neutral" and data["parent_version"] == 12
