"""The fine-tuning loop: one readable function in the spirit of nanoGPT.

Packed blocks in, AdamW with warm-up and cosine decay, validation loss after every epoch,
the best epoch's weights kept, early stop when validation stops improving.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from models.config import TrainConfig
from models.data import IGNORE_INDEX, PackedBlocks, pack_poems
from models.modeling import load_model

# on_step(step, total_steps, loss): called after every optimizer step.
StepCallback = Callable[[int, int, float], None]


@dataclass
class FineTuned:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    metrics: dict[str, Any]
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) per epoch


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


def fine_tune(
    init: str | Path,
    train_texts: list[str],
    val_texts: list[str],
    config: TrainConfig,
    *,
    on_step: StepCallback | None = None,
) -> FineTuned:
    """Fine-tune the causal LM at `init` (hub id or folder) on `train_texts`.

    Without validation poems (tiny partitions) the best epoch is chosen on training loss.
    """
    torch.manual_seed(config.seed)
    device = pick_device()
    model, tokenizer = load_model(init)
    model.to(device).train()
    train = pack_poems(train_texts, tokenizer, config.block_size)
    val = pack_poems(val_texts, tokenizer, config.block_size)
    if len(train) == 0:
        raise ValueError("no training text")

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    order = torch.Generator().manual_seed(config.seed)

    result = FineTuned(model, tokenizer, metrics={})
    best_loss, best_state, best_epoch, stale = math.inf, None, 0, 0
    step, started = 0, time.perf_counter()
    epoch = 0
    while step < total_steps:
        epoch += 1
        epoch_loss, epoch_batches = 0.0, 0
        for batch in torch.randperm(len(train), generator=order).split(config.batch_size):
            if step >= total_steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, config)
            x = train.input_ids[batch].to(device, non_blocking=True)
            y = train.labels[batch].to(device, non_blocking=True)
            with _autocast(device):
                loss = model(input_ids=x, attention_mask=_mask(y), labels=y).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_value = loss.detach().item()
            epoch_loss += loss_value
            epoch_batches += 1
            result.train_curve.append((step, loss_value))
            if on_step is not None:
                on_step(step, total_steps, loss_value)

        score = evaluate(model, val, config.batch_size) if len(val) else epoch_loss / epoch_batches
        result.val_curve.append((step, score))
        if score < best_loss:
            best_loss, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale > config.patience:
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    seconds = time.perf_counter() - started
    result.metrics = {
        "val_loss": round(best_loss, 4) if len(val) else None,
        "train_loss": round(result.train_curve[-1][1], 4),
        "best_epoch": best_epoch,
        "epochs_run": epoch,
        "steps": step,
        "train_poems": train.n_poems,
        "train_tokens": train.n_tokens,
        "val_poems": val.n_poems,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(step * config.batch_size * config.block_size / seconds, 1),
        "device": device.type,
    }
    model.to("cpu").eval()
    return result


def _mask(labels: torch.Tensor) -> torch.Tensor:
    # Only the tail of the last block is padding, so this masks pads and nothing else.
    return (labels != IGNORE_INDEX).long()


def _autocast(device: torch.device) -> torch.autocast:
    # bf16 on GPUs (no loss scaling needed); plain fp32 on the CPU, where bf16 is slower.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
