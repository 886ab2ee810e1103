"""The dataset card (`README.md`) of a partitions version, in the Hub's format: YAML metadata
that `datasets.load_dataset(<partitions>)` reads (one config per label with rows, plus `all`,
the default; each split a file), then a short description of how the poems were tagged."""

from typing import Any

import pyarrow as pa
import yaml

from emoverse.emotions import LABELS
from emoverse.schema import TAGGED_SCHEMA
from emoverse.tagging.rule import SPLITS

CARD_NAME = "README.md"  # the name `datasets` and the Hub read a dataset card from
ALL_CONFIG = "all"
DATASET_ID = "emoverse-poems"  # the partitions' name on the Hub, as model cards cite them
LEXICON_LINK = "https://saifmohammad.com/WebPages/NRC-Emotion-Lexicon.htm"
LICENSE_NAME = "nrc-emotion-lexicon"

_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def _features(schema: pa.Schema) -> list[dict[str, str]]:
    # Every column is a string or an integer: pyarrow's names for them are the Hub's dtypes.
    return [{"name": field.name, "dtype": str(field.type)} for field in schema]


def _config(name: str, labels: list[str], manifest: dict[str, Any]) -> dict[str, Any]:
    """A config's files per split. A split without rows is left out: `datasets` refuses a
    split with no data ("corresponds to no data"), though it reads a schema-only file."""
    files, splits = manifest["files"], manifest["splits"]
    data_files = [
        {"split": split, "path": [files[label][split] for label in labels]}
        for split in SPLITS
        if sum(splits[label][split] for label in labels)
    ]
    return {"config_name": name, "data_files": data_files}


def _info(config: dict[str, Any], labels: list[str], manifest: dict[str, Any]) -> dict[str, Any]:
    """A config's features and splits. Each split carries `num_bytes` beside `num_examples`:
    without it `datasets` finds the card's split info malformed and warns on every load."""
    splits = manifest["splits"]
    nbytes = manifest.get("bytes") or {}  # the rows' size as Arrow data, as `datasets` counts
    named = [files["split"] for files in config["data_files"]]
    return {
        "config_name": config["config_name"],
        "features": _features(TAGGED_SCHEMA),
        "splits": [
            {
                "name": split,
                "num_bytes": sum((nbytes.get(label) or {}).get(split, 0) for label in labels),
                "num_examples": sum(splits[label][split] for label in labels),
            }
            for split in named
        ],
    }


def card_metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    """The card's YAML metadata for a version's manifest (its `files` and `splits`: the file
    and the rows of each label and split)."""
    splits = manifest["splits"]
    rows = sum(sum(per.values()) for per in splits.values())
    with_rows = [label for label in LABELS if sum(splits[label].values())]
    configs = [{**_config(ALL_CONFIG, list(LABELS), manifest), "default": True}]
    configs += [_config(label, [label], manifest) for label in with_rows]
    labelled = {ALL_CONFIG: list(LABELS), **{label: [label] for label in with_rows}}
    return {
        "pretty_name": "emoverse poems by emotion",
        "language": ["en"],
        # The poems are public domain; the labels are the NRC lexicon's, under its terms.
        "license": "other",
        "license_name": LICENSE_NAME,
        "license_link": LEXICON_LINK,
        "annotations_creators": ["machine-generated"],
        "language_creators": ["found"],
        "multilinguality": ["monolingual"],
        "size_categories": [next((name for top, name in _SIZES if rows < top), "n>1M")],
        "source_datasets": ["original"],
        "task_categories": ["text-generation", "text-classification"],
        "tags": ["poetry", "emotion", "project-gutenberg", "nrc-emotion-lexicon", "emoverse"],
        "configs": configs,
        "dataset_info": [_info(c, labelled[c["config_name"]], manifest) for c in configs],
    }


def dataset_card(manifest: dict[str, Any]) -> str:
    """The whole card: metadata, then how the poems were tagged, the counts per label and
    split, how to load them, and the licence."""
    meta = card_metadata(manifest)
    splits = manifest["splits"]
    total = sum(sum(per.values()) for per in splits.values())
    options = manifest.get("options") or {}
    lexicon = manifest.get("lexicon") or {}
    header = "| label | poems | share | " + " | ".join(SPLITS) + " |"
    rule = "| --- " * (3 + len(SPLITS)) + "|"
    table = [header, rule]
    for label in LABELS:
        n = sum(splits[label].values())
        share = f"{n / total:.1%}" if total else "-"
        table.append(
            f"| {label} | {n:,} | {share} | "
            + " | ".join(f"{splits[label][s]:,}" for s in SPLITS)
            + " |"
        )
    table.append(
        f"| **total** | {total:,} | 100% | "
        + " | ".join(f"{sum(splits[lb][s] for lb in LABELS):,}" for s in SPLITS)
        + " |"
    )
    empty = [label for label in LABELS if not sum(splits[label].values())]
    no_config = f" No poems this time, so no config: {', '.join(empty)}." if empty else ""
    lemmas = "noun lemmas (lemminflect)" if options.get("lemmatize") else "surface words"
    negation = (
        "a hit up to three words after a negator on its line is dropped"
        if options.get("negation")
        else "no negation handling"
    )
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n\n"
        "# emoverse poems by emotion\n\n"
        f"Poems from Project Gutenberg poetry books, {total:,} of them, each labelled with one of "
        "the eight emotions of the NRC Emotion Lexicon or `neutral` (partitions version "
        f"{manifest.get('version', '?')}, {manifest.get('created', '?')}). One config per label "
        f"and `{ALL_CONFIG}` (the default) with every label; the `label` column holds each "
        f"poem's label, the `data/emotion=<label>/` folder names it again.{no_config}\n\n"
        "## How the poems were tagged\n\n"
        "Every poem's words (NLTK's word tokenizer per line, lowercased, punctuation "
        f"stripped; {lemmas}) are looked up in the NRC Emotion Lexicon as NRCLex "
        f"{lexicon.get('nrclex', '?')} ships it (sha256 `{str(lexicon.get('sha256', '?'))[:16]}`), "
        "giving the ten count columns. The label is the emotion of the eight with the highest "
        f"count when it reaches {options.get('min_hits', 1)} and beats the runner-up by at "
        f"least {options.get('min_margin', 1)}, else `neutral`; {negation}. Tagger version "
        f"{manifest.get('tagger_version', '?')}. The split (about 90/5/5) is a hash of "
        "`poem_id`, stable across versions.\n\n"
        "## Poems per label and split\n\n" + "\n".join(table) + "\n\n"
        "## Loading\n\n"
        "```python\n"
        "from datasets import load_dataset\n"
        "poems = load_dataset('path/to/partitions')          # every label\n"
        "joy = load_dataset('path/to/partitions', 'joy')     # one label\n"
        "```\n\n"
        "`load_dataset('parquet', data_dir='path/to/partitions')` reads every label too, "
        "its splits found by the files' names. The Parquet files are under `data/`, apart "
        "from this card, so pandas and pyarrow read that folder as it is:\n\n"
        "```python\n"
        "import pandas, pyarrow.dataset\n"
        "poems = pandas.read_parquet('path/to/partitions/data')\n"
        "table = pyarrow.dataset.dataset('path/to/partitions/data', partitioning='hive')\n"
        "```\n\n"
        "## Licence\n\n"
        "The Gutenberg texts are in the public domain in the USA. The labels and counts come "
        "from the NRC Emotion Lexicon (Saif Mohammad and Peter Turney, National Research "
        "Council Canada), free for research and non-commercial use; commercial use of the "
        f"labels, and so of this dataset, needs a licence from the NRC ({LEXICON_LINK}).\n"
    )
