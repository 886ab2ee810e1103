"""Training throughput: the common tutorial loop against the project's trainer, one run.

    .venv/bin/python bench/train_throughput.py                  # CPU: scratch:tiny
    .venv/bin/python bench/train_throughput.py --preset gpt2    # GPU: the GPT-2 124M shape

Both train the same model shape on the same poems (Shakespeare, Blake, Dickinson from the
local mirror). Printed per loop: real (non-pad) tokens per second, and model FLOPs
utilisation against the peak (790 TFLOP/s, the measured bf16 ceiling of an H100; meaningless
on a CPU, printed for the same table). The baseline is the tutorial recipe: fp32, every poem
padded or cut to 300 tokens, batch 10, plain AdamW, eager attention.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emoverse.corpus import book_to_rows  # noqa: E402
from models.config import BASE_TRAIN, scratch_preset  # noqa: E402
from models.device import pick_device  # noqa: E402
from models.folders.model_folder import build_scratch_model, load_model  # noqa: E402
from models.training.loop import fine_tune  # noqa: E402

MIRROR = REPO.parent / "shared" / "gutenberg" / "cache" / "epub"
BOOKS = (1041, 574, 12242)
PEAK_FLOPS = 790e12


def flops_per_token(n_params: int, n_layer: int, n_embd: int, context: int) -> float:
    """Training FLOPs per token: 6N for the weights plus the attention scores (PaLM's rule)."""
    return 6 * n_params + 12 * n_layer * n_embd * context


def baseline_tokens_per_second(init: Path, texts: list[str], steps: int, device: torch.device):
    """The tutorial loop: fp32, pad to 300, batch 10, plain AdamW, eager attention."""
    model, tokenizer = load_model(init)
    model.config._attn_implementation = "eager"
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, foreach=False)
    # 300 as the tutorials do, or the whole context of a smaller preset.
    batch_size, length = 10, min(300, model.config.n_positions)
    real_tokens, started = 0, None
    for step in range(steps + 2):  # two warm-up steps, not timed
        if step == 2:
            _sync(device)
            started, real_tokens = time.perf_counter(), 0
        chunk = [texts[(step * batch_size + i) % len(texts)] for i in range(batch_size)]
        enc = tokenizer(
            [tokenizer.bos_token + t + tokenizer.eos_token for t in chunk],
            padding="max_length",
            truncation=True,
            max_length=length,
            return_tensors="pt",
        ).to(device)
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        real_tokens += int(enc.attention_mask.sum())
    _sync(device)
    return real_tokens / (time.perf_counter() - started), length


def project_tokens_per_second(init: Path, texts: list[str], steps: int):
    """The project's trainer, as the pipeline runs it (packed blocks, bf16 on GPUs, fused AdamW)."""
    # As many epochs as allowed: max_steps ends the run.
    config = BASE_TRAIN.with_overrides(max_steps=steps + 2, epochs=1000, warmup_steps=2)
    times: list[float] = []

    def on_step(step: int, total: int, loss: float) -> None:
        times.append(time.perf_counter())  # .item() inside the loop has synchronised already

    tuned = fine_tune(init, texts, [], config, on_step=on_step)
    # Packing leaves padding only in the last block: every other position is a real token.
    seconds = times[-1] - times[1]  # steps 3.. after two warm-up steps
    return (
        (len(times) - 2) * config.batch_size * config.block_size / seconds,
        config.block_size,
        (tuned.metrics),
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="scratch preset (tiny, small, gpt2)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per loop")
    args = parser.parse_args()

    device = pick_device()
    texts = [
        r["text"] for b in BOOKS for r in book_to_rows(b, (MIRROR / f"{b}/pg{b}.txt").read_bytes())
    ]
    lengths = None
    with tempfile.TemporaryDirectory() as tmp:
        init = build_scratch_model(f"scratch:{args.preset}", texts, Path(tmp) / "init")
        model, tokenizer = load_model(init)
        n_params = sum(p.numel() for p in model.parameters())
        lengths = [len(ids) + 2 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        shape = scratch_preset(f"scratch:{args.preset}")
        del model

        base_tps, base_ctx = baseline_tokens_per_second(init, texts, args.steps, device)
        proj_tps, proj_ctx, _ = project_tokens_per_second(init, texts, args.steps)

    def mfu(tps: float, ctx: int) -> float:
        return tps * flops_per_token(n_params, shape["n_layer"], shape["n_embd"], ctx) / PEAK_FLOPS

    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name}; model: scratch:{args.preset}, {n_params / 1e6:.2f}M parameters")
    print(
        f"poems: {len(texts)}, tokens per poem: median {statistics.median(lengths):.0f}, "
        f"max {max(lengths)}; {args.steps} timed steps per loop"
    )
    print(f"{'loop':<34}{'real tokens/s':>15}{'MFU':>9}")
    for label, tps, ctx in (
        (f"baseline (fp32, pad {base_ctx}, batch 10)", base_tps, base_ctx),
        ("emoverse trainer", proj_tps, proj_ctx),
    ):
        print(f"{label:<34}{tps:>15,.0f}{mfu(tps, ctx):>9.2%}")
    print(f"speed-up: {proj_tps / base_tps:.1f}x")


if __name__ == "__main__":
    main()
