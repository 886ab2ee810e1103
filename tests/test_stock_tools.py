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
