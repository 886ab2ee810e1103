"""The fine-tuning loop: one readable function in the spirit of nanoGPT.

Packed blocks in, AdamW with warm-up and cosine decay, validation loss after every epoch,
the best epoch's weights kept, early stop when validation stops improving.
"""

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emoverse import settings
from emoverse.errors import EmoverseError
from models.config import TrainConfig
from models.device import pick_device
from models.folders.model_folder import load_model
from models.training.data import IGNORE_INDEX, PackedBlocks, pack_poems

# on_step(step, total_steps, loss): called after every optimizer step.
StepCallback = Callable[[int, int, float], None]


@dataclass
class FineTuned:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    metrics: dict[str, Any]
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) per epoch


def start_distributed() -> tuple[int, int]:
    """(rank, world size). Under `torchrun` / `accelerate launch` (WORLD_SIZE > 1) this joins
    the process group: nccl between GPUs, gloo between CPU processes."""
    world = settings.world_size()
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * learning_rate`."""
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    floor = peak * config.min_lr_ratio
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: PreTrainedModel, blocks: PackedBlocks, batch_size: int) -> float:
    """Mean next-token loss (nats) over every real target token of `blocks`."""
    model.eval()
    device = next(model.parameters()).device
    total_loss, total_targets = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        x = blocks.input_ids[start : start + batch_size].to(device)
        y = blocks.labels[start : start + batch_size].to(device)
        with _autocast(device):
            loss = model(input_ids=x, attention_mask=_mask(y), labels=y).loss
        n = int((y[:, 1:] != IGNORE_INDEX).sum())  # the model shifts labels by one
        total_loss += float(loss) * n
        total_targets += n
    model.train()
    return total_loss / max(1, total_targets)


@dataclass
class LoopState:
    """Everything the loop needs to continue exactly where it stopped."""

    step: int = 0
    epoch: int = 0  # epochs started
    batch_in_epoch: int = 0  # batches of the current epoch already trained
    epoch_order: torch.Tensor | None = None  # shuffling RNG state at the epoch's start
    epoch_loss: float = 0.0
    epoch_batches: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    stale: int = 0
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)


CHECKPOINT_FILE = "checkpoint.pt"


def fine_tune(
    init: str | Path,
    train_texts: list[str],
    val_texts: list[str],
    config: TrainConfig,
    *,
    on_step: StepCallback | None = None,
    checkpoint_dir: Path | None = None,
    controls: tuple[list[str], list[str]] | None = None,
) -> FineTuned:
    """Fine-tune the causal LM at `init` (hub id or folder) on `train_texts`.

    Without validation poems (tiny partitions) the best epoch is chosen on training loss.
    With `checkpoint_dir`, the full training state is saved every `config.checkpoint_every` steps
    and a rerun with the same arguments resumes from it, ending with the same weights as a
    run that was never interrupted. Launched data-parallel (torchrun, accelerate launch), each
    of the N processes trains on its own share of every step's N batches. `controls`: the
    control token of every train and validation poem (the conditional model,
    models/training/data.py).
    """
    rank, world = start_distributed()
    torch.manual_seed(config.seed)
    device = pick_device()
    model, tokenizer = load_model(init)
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    if config.block_size > context:
        raise EmoverseError(
            f"block size {config.block_size} exceeds the model's context of {context} tokens"
        )
    if config.adapter == "lora":
        model = _with_lora(model, config.lora_rank)
    model.to(device).train()
    train_controls, val_controls = controls if controls is not None else (None, None)
    train = pack_poems(train_texts, tokenizer, config.block_size, train_controls)
    val = pack_poems(val_texts, tokenizer, config.block_size, val_controls)
    if len(train) == 0:
        raise ValueError("no training text")
    if device.type == "cuda":  # page-locked host memory lets copies overlap compute
        train = PackedBlocks(
            train.input_ids.pin_memory(), train.labels.pin_memory(), train.n_poems, train.n_tokens
        )
    trainable = model
    if world > 1:  # gradients are averaged across processes after every backward
        ids = [device.index] if device.type == "cuda" else None
        trainable = DistributedDataParallel(model, device_ids=ids)
    # Wrappers share the model's parameters: state dicts stay the model's own.
    forward = torch.compile(trainable) if config.compile else trainable

    # One optimizer step takes `world` batches, one per process.
    steps_per_epoch = math.ceil(len(train) / (config.batch_size * world))
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],  # only the adapter, with LoRA
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    order = torch.Generator().manual_seed(config.seed)
    state, best_state = LoopState(), None
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    if checkpoint is not None and checkpoint.exists():
        state, best_state = _restore(checkpoint, model, optimizer)

    started = time.perf_counter()
    while state.step < total_steps:
        if state.batch_in_epoch == 0:  # a new epoch (a resumed one keeps its order and sums)
            state.epoch += 1
            state.epoch_order = order.get_state()
            state.epoch_loss, state.epoch_batches = 0.0, 0
        order.set_state(state.epoch_order)
        batches = torch.randperm(len(train), generator=order).split(config.batch_size)
        for i in range(state.batch_in_epoch, steps_per_epoch):
            if state.step >= total_steps:
                break
            # Every process draws the same order; the last step of an uneven epoch wraps
            # around, because every process must take part in every step.
            batch = batches[(i * world + rank) % len(batches)]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(state.step, total_steps, config)
            x = train.input_ids[batch].to(device, non_blocking=True)
            y = train.labels[batch].to(device, non_blocking=True)
            with _autocast(device):
                loss = forward(input_ids=x, attention_mask=_mask(y), labels=y).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.detach().item()
            state.step += 1
            state.batch_in_epoch += 1
            state.epoch_loss += loss_value
            state.epoch_batches += 1
            state.train_curve.append((state.step, loss_value))
            if on_step is not None and rank == 0:
                on_step(state.step, total_steps, loss_value)
            if checkpoint and rank == 0 and state.step % config.checkpoint_every == 0:
                _save(checkpoint, state, model, optimizer, best_state)

        state.batch_in_epoch = 0
        score = (
            evaluate(model, val, config.batch_size)
            if len(val)
            else state.epoch_loss / state.epoch_batches
        )
        state.val_curve.append((state.step, score))
        if score < state.best_loss:
            state.best_loss, state.best_epoch, state.stale = score, state.epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            state.stale += 1
            if state.stale > config.patience:
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    seconds = time.perf_counter() - started
    result = FineTuned(
        model, tokenizer, metrics={}, train_curve=state.train_curve, val_curve=state.val_curve
    )
    result.metrics = {
        "val_loss": round(state.best_loss, 4) if len(val) else None,
        "train_loss": round(state.train_curve[-1][1], 4),
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "steps": state.step,
        "train_poems": train.n_poems,
        "train_tokens": train.n_tokens,
        "val_poems": val.n_poems,
        "seconds": round(seconds, 2),
        # every process trains its own batch of each step
        "tokens_per_second": round(
            state.step * world * config.batch_size * config.block_size / seconds, 1
        ),
        "device": device.type,
        "processes": world,
    }
    model.to("cpu").eval()
    return result


def _save(
    path: Path,
    state: LoopState,
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    best_state: dict[str, torch.Tensor] | None,
) -> None:
    """Write the checkpoint beside its final name, then rename: a kill mid-write leaves the
    previous checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "loop": asdict(state),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best_model": best_state,
        "torch_rng": torch.get_rng_state(),  # dropout draws
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _restore(
    path: Path, model: PreTrainedModel, optimizer: torch.optim.Optimizer
) -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    # weights_only: a checkpoint holds tensors and plain containers, never code to unpickle.
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"]:
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    loop = payload["loop"]
    loop["train_curve"] = [tuple(p) for p in loop["train_curve"]]
    loop["val_curve"] = [tuple(p) for p in loop["val_curve"]]
    return LoopState(**loop), payload["best_model"]


def _with_lora(model: PreTrainedModel, rank: int) -> PreTrainedModel:
    """Freeze the model and train low-rank updates of its attention and MLP projections."""
    from peft import LoraConfig, get_peft_model  # seconds to import: LoRA runs only

    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.05,
        target_modules=["c_attn", "c_proj", "c_fc"],  # GPT-2's projections
        fan_in_fan_out=True,  # GPT-2 stores them as Conv1D, weights transposed
    )
    return get_peft_model(model, config)


def _mask(labels: torch.Tensor) -> torch.Tensor:
    # Only the tail of the last block is padding, so this masks pads and nothing else.
    return (labels != IGNORE_INDEX).long()


def _autocast(device: torch.device) -> torch.autocast:
    # bf16 on GPUs (no loss scaling needed); plain fp32 on the CPU, where bf16 is slower.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
