"""The conditional model: one model for all nine labels, told which by a control token before
the poem (`<|joy|> bos poem eos`), as AutoCompose proposes. It sees every poem, so the small
partitions (surprise and disgust about 1% of the corpus) borrow strength from the others.

A plain function over paths like `models.training.stages`: same start as the neutral base (a hub
model
or the scratch preset's foundation), the nine control tokens added to its tokenizer, trained
on the train split of every partition; the folder is named by its run key, so a rerun with
nothing changed trains nothing and a killed run resumes from its checkpoint.
"""

import hashlib
import math
import random
from pathlib import Path
from typing import get_args

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emoverse.done import reuse_or_build, stage_key
from emoverse.emotions import CONDITIONAL, CONTROL_TOKENS, LABELS, control_token
from models.config import Balance, TrainConfig
from models.device import is_main_process
from models.folders.card import read_card_metadata, training_metrics
from models.folders.model_folder import load_model, write_model_folder
from models.records import SkippedModel, TrainedModel
from models.training.data import load_partition
from models.training.loop import StepCallback
from models.training.stages import _run_key, _saved, _train_into

# How the nine partitions are mixed. `plain`: every train poem once, so a label weighs as
# much as its share of the corpus (surprise ~1%). `sqrt`: each partition repeated up to
# sqrt(n * n_largest) poems, i.e. temperature sampling at T=2 (as multilingual models balance
# languages): surprise rises from 1/100 of neutral to 1/10, and no poem is ever dropped.
BALANCES: tuple[str, ...] = get_args(Balance)
DEFAULT_BALANCE: Balance = "sqrt"
# How the new embedding rows start: the mean embedding of the label word's own tokens
# (" joy"), so each control token begins where the model already keeps that emotion (and
# the nine start apart from each other), rather than all nine at one mean vector that the
# first steps must pull apart.
CONTROL_INIT = "label-word"
# How the poems are laid out in blocks (models/training/data.py): 2 repeats the control token at the
# start of every block that begins inside a poem. Part of the data fingerprint, so a model
# trained on another layout is not reused.
LAYOUT = 2


def add_control_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Add the nine control tokens to `tokenizer` as extra special tokens (never split, skipped
    when decoding), resize `model`'s embeddings and start each new row at the mean embedding
    of its label word's tokens. Returns the tokens' ids, in LABELS order."""
    tokenizer.add_special_tokens(
        {"extra_special_tokens": list(CONTROL_TOKENS)}, replace_extra_special_tokens=False
    )
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = tokenizer.convert_tokens_to_ids(list(CONTROL_TOKENS))
    tables = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not tables[0]:  # an untied head: its rows too
        tables.append(output.weight)
    with torch.no_grad():
        for label, token_id in zip(LABELS, ids, strict=True):
            word = tokenizer(f" {label}", add_special_tokens=False)["input_ids"]
            for table in tables:
                table[token_id] = table[word].mean(dim=0)
    return ids


def prepare_start(init: str | Path, models_dir: Path) -> Path:
    """`init` (the neutral base's start) with the control tokens added, saved once under
    `models_dir/conditional/start-<key>/`: the folder the conditional training starts from."""
    name = f"dir:{Path(init).name}" if Path(init).is_dir() else f"hub:{init}"
    key = stage_key([name, list(CONTROL_TOKENS), CONTROL_INIT], 12)
    out = Path(models_dir) / CONDITIONAL / f"start-{key}"

    def build(folder: Path) -> None:
        model, tokenizer = load_model(init)
        add_control_tokens(model, tokenizer)
        write_model_folder(model, tokenizer, folder)

    reuse_or_build(out, build, done=_saved)
    return out


def balanced_counts(counts: dict[str, int], balance: str) -> dict[str, int]:
    """How many train poems each label contributes under `balance` (see BALANCES)."""
    if balance == "plain":
        return dict(counts)
    if balance != "sqrt":
        raise ValueError(f"unknown balance {balance!r}; valid: {', '.join(BALANCES)}")
    largest = max(counts.values(), default=0)
    return {label: max(n, round(math.sqrt(n * largest))) if n else 0 for label, n in counts.items()}


def _mix(
    partitions_dir: Path, split: str, balance: str, seed: int, cache_dir: Path | None
) -> tuple[list[str], list[str], dict[str, int], str]:
    """(texts, control tokens, poems per label, fingerprint) of one split of every partition:
    balanced as asked, then shuffled from `seed`, so repeated poems and labels are spread
    over the blocks rather than packed next to each other."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for label in LABELS:
        ds = load_partition(partitions_dir, label, split, cache_dir)
        rows[label] = list(zip(ds["poem_id"], ds["text"], strict=True))
    wanted = balanced_counts({lb: len(r) for lb, r in rows.items()}, balance)
    rng = random.Random(f"{seed}:{split}:{balance}")
    mixed: list[tuple[str, str, str]] = []
    for label, poems in rows.items():
        whole, rest = divmod(wanted[label], len(poems)) if poems else (0, 0)
        picked = poems * whole + rng.sample(poems, rest)
        mixed += [(control_token(label), poem_id, text) for poem_id, text in picked]
    rng.shuffle(mixed)
    h = hashlib.sha256(f"layout {LAYOUT}\0".encode())
    for control, poem_id, text in mixed:
        h.update(f"{control}\0{poem_id}\0{text}\0".encode())
    return [t for _, _, t in mixed], [c for c, _, _ in mixed], wanted, h.hexdigest()


def train_conditional_model(
    init: str,
    *,
    partitions_dir: Path,
    models_dir: Path,
    config: TrainConfig,
    parent: str,
    balance: str = DEFAULT_BALANCE,
    cache_dir: Path | None = None,
    on_step: StepCallback | None = None,
) -> TrainedModel | SkippedModel:
    """Train the conditional model from `init` (what the neutral base starts from) on the
    train split of every partition, each poem as `<|label|> bos poem eos`, and save it under
    `models_dir/conditional/run-<key>/`; validation on every partition's validation split
    (unbalanced: it measures the corpus as it is). An identical earlier run is reused."""
    texts, controls, per_label, data_fp = _mix(
        partitions_dir, "train", balance, config.seed, cache_dir
    )
    if not texts:
        return SkippedModel(CONDITIONAL, "no training poems in any partition")
    start = prepare_start(init, models_dir)
    run_key = _run_key(start, data_fp, config)
    out = Path(models_dir) / CONDITIONAL / f"run-{run_key}"
    extra = {"balance": balance, "label_poems": per_label}
    if _saved(out):
        metrics = {**training_metrics(read_card_metadata(out)), **extra}
        return TrainedModel(CONDITIONAL, str(out), parent, data_fp, metrics, cached=True)
    val_texts, val_controls, _, _ = _mix(partitions_dir, "validation", "plain", 0, cache_dir)
    metrics = _train_into(
        out,
        run_key,
        start,
        texts,
        val_texts,
        config,
        on_step=on_step,
        emotion=CONDITIONAL,
        parent=parent,
        data_fingerprint=data_fp,
        controls=(controls, val_controls),
    )
    path = str(out) if is_main_process() else ""
    return TrainedModel(CONDITIONAL, path, parent, data_fp, {**metrics, **extra})
