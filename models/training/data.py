"""Training data: partitions read through `datasets`, poems packed into fixed-length blocks."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch
from datasets import Dataset, disable_progress_bars, load_dataset
from transformers import PreTrainedTokenizerBase

from emoverse.errors import MissingStageOutputError
from emoverse.tagging import split_for
from emoverse.tagging.store import check_partitions

# Our own bars show training progress; per-file "Generating split" bars would bury them.
disable_progress_bars()

# Label value that the causal-LM loss ignores.
IGNORE_INDEX = -100


def load_partition(
    partitions_dir: Path, label: str, split: str, cache_dir: Path | None = None
) -> Dataset:
    """One label's poems of one split (train/validation/test) as a `datasets.Dataset`."""
    check_partitions(partitions_dir)
    files = sorted(str(p) for p in (Path(partitions_dir) / f"emotion={label}").glob("*.parquet"))
    if not files:
        raise MissingStageOutputError(
            f"no {label} partition under {partitions_dir}; run `emoverse tag` first"
        )
    if sum(pq.ParquetFile(f).metadata.num_rows for f in files) == 0:
        # `datasets` cannot read a Parquet file without rows; small corpora have such partitions.
        return Dataset(pq.read_table(files[0]))
    ds = load_dataset(
        "parquet",
        data_files=files,
        split="train",  # `datasets`' own name for "all rows of these files"
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    return ds.filter(lambda s: [x == split for x in s], input_columns="split", batched=True)


def load_poems(poems_file: Path, split: str, cache_dir: Path | None = None) -> Dataset:
    """One split of every ingested poem, whatever its label, ordered by poem id: what a
    foundation pretrains on. The split is the one tagging gives each poem (a hash of its id),
    so no validation or test poem of any partition is ever pretrained on."""
    if not Path(poems_file).exists():
        raise MissingStageOutputError(f"no poems at {poems_file}; run `emoverse ingest` first")
    ds = load_dataset(
        "parquet",
        data_files=str(poems_file),
        split="train",
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    ds = ds.filter(
        lambda ids: [split_for(i) == split for i in ids], input_columns="poem_id", batched=True
    )
    return ds.sort("poem_id")


def fingerprint(ds: Dataset) -> str:
    """sha256 over the (poem_id, text) pairs, in order: names the exact data a model saw."""
    h = hashlib.sha256()
    for poem_id, text in zip(ds["poem_id"], ds["text"], strict=True):
        h.update(poem_id.encode())
        h.update(b"\0")
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class PackedBlocks:
    input_ids: torch.Tensor  # [n_blocks, block_size]
    labels: torch.Tensor  # same shape; IGNORE_INDEX where the position is padding
    n_poems: int
    n_tokens: int  # real (non-pad) tokens

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def pack_poems(
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    controls: list[str] | None = None,
) -> PackedBlocks:
    """Concatenate `bos + poem + eos` for every poem and cut the stream into blocks of
    `block_size`, so no compute goes to padding; only the last block is padded, and its pad
    positions are excluded from the loss. Attention still crosses poem boundaries inside a
    block: the boundary token tells the model a new poem starts (GPT-2's own pretraining
    recipe), which costs a little context noise and no compute.

    `controls` (the conditional model): one control token per poem, put before its bos
    (`<|joy|> bos poem eos`), and again at the start of every block that begins inside a
    poem, so no block is trained without its label in view (a block cut mid-poem would
    otherwise teach the poem's second half unconditioned). Control tokens are given, never
    targets."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if controls is not None and len(controls) != len(texts):
        raise ValueError(f"{len(controls)} control tokens for {len(texts)} poems")
    # verbose=False: poems longer than the context are expected here, cut into blocks below.
    encoded = (
        tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    )
    if controls:
        control_ids = tokenizer.convert_tokens_to_ids(controls)
        return _pack_conditioned(encoded, control_ids, block_size, bos, eos, pad)
    stream: list[int] = []
    for ids in encoded:
        stream.extend([bos, *ids, eos])
    n_tokens = len(stream)
    n_blocks = -(-n_tokens // block_size)  # ceil
    padded = stream + [pad] * (n_blocks * block_size - n_tokens)
    input_ids = torch.tensor(padded, dtype=torch.long).view(n_blocks, block_size)
    labels = input_ids.clone()
    if n_blocks:
        labels.view(-1)[n_tokens:] = IGNORE_INDEX
    return PackedBlocks(input_ids, labels, n_poems=len(texts), n_tokens=n_tokens)


def _pack_conditioned(
    encoded: list[list[int]], control_ids: list[int], block_size: int, bos: int, eos: int, pad: int
) -> PackedBlocks:
    """`pack_poems` with a control token per poem: `ctrl bos poem eos` packed, and every block
    that starts inside a poem opened with that poem's control token."""
    stream: list[int] = []
    owner: list[int] = []  # which poem's control token each stream position belongs to
    for n, ids in enumerate(encoded):
        piece = [control_ids[n], bos, *ids, eos]
        stream.extend(piece)
        owner.extend([control_ids[n]] * len(piece))
    controls = set(control_ids)
    rows: list[list[int]] = []
    pos = 0
    while pos < len(stream):
        if stream[pos] in controls:  # a poem starts here: its own token opens the block
            row = stream[pos : pos + block_size]
            pos += len(row)
        else:
            row = [owner[pos], *stream[pos : pos + block_size - 1]]
            pos += len(row) - 1
        rows.append(row)
    n_tokens = sum(len(r) for r in rows)
    input_ids = torch.full((len(rows), block_size), pad, dtype=torch.long)
    labels = torch.full((len(rows), block_size), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
    labels[torch.isin(input_ids, torch.tensor(sorted(controls)))] = IGNORE_INDEX
    return PackedBlocks(input_ids, labels, n_poems=len(encoded), n_tokens=n_tokens)
