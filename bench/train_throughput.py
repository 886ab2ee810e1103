"""Training throughput: the common tutorial loop against the project's trainer, one run.

    .venv/bin/python bench/train_throughput.py                  # CPU: scratch:tiny
    .venv/bin/python bench/train_throughput.py --preset gpt2    # GPU: the GPT-2 124M shape
    python bench/train_throughput.py --preset gpt2 --batch-size 32 --block-size 1024 \
        --compile --json out.json --profile-dir prof/    # what bench/gpu_run.py runs

Both train the same model shape on the same poems (Shakespeare, Blake, Dickinson from the
local mirror, or `--mirror`). Printed per loop: real (non-pad) tokens per second, and model
FLOPs utilisation against the peak (`--peak-tflops`, default 989: the H100/H200 bf16 dense
figure of the data sheet; about 790 is what a large bf16 matrix product reaches on them;
meaningless on a CPU, printed for the same table). The baseline is the tutorial recipe: fp32,
every poem padded or cut to 300 tokens, batch 10, plain AdamW, eager attention. The project's
trainer runs with its base-stage settings unless `--batch-size`, `--block-size` or `--compile`
say otherwise (a GPU wants more tokens per step than the CPU defaults give).

With `--profile-dir`, a run short of the targets (25x the baseline, 40% MFU) profiles a few
more steps of the project's trainer with the torch profiler and writes where the time goes
(`profile.txt`, the operators by self time; on a GPU also the trace, `trace.json.gz`).
"""

import argparse
import gzip
import json
import shutil
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

MIRROR = REPO.parent / "shared" / "gutenberg"
BOOKS = (1041, 574, 12242)
PEAK_TFLOPS = 989.0  # H100/H200 SXM, bf16 dense, data sheet
TARGET_SPEEDUP, TARGET_MFU = 25.0, 0.40


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


def project_config(steps: int, **overrides: object):
    """The base stage's settings, `overrides` (batch, block, compile) applied; as many epochs
    as allowed: max_steps ends the run."""
    return BASE_TRAIN.with_overrides(
        max_steps=steps + 2, epochs=1000, warmup_steps=2, patience=1000, **overrides
    )


def project_tokens_per_second(init: Path, texts: list[str], steps: int, **overrides: object):
    """The project's trainer, as the pipeline runs it (packed blocks, bf16 on GPUs, fused AdamW)."""
    config = project_config(steps, **overrides)
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


def profile_project(
    init: Path, texts: list[str], out_dir: Path, device: torch.device, **overrides: object
) -> Path:
    """A few steps of the project's trainer under the torch profiler: the operators by self
    time (CUDA time on a GPU) in `profile.txt`, and on a GPU the trace in `trace.json.gz`."""
    from torch.profiler import ProfilerActivity, profile

    out_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    config = project_config(4, **overrides)
    with profile(activities=activities) as prof:
        fine_tune(init, texts, [], config)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=20)
    report = out_dir / "profile.txt"
    report.write_text(
        f"torch profiler, the project's trainer, {config.max_steps} steps (model load and "
        f"packing included), sorted by {key}\n\n{table}\n"
    )
    if device.type == "cuda":
        trace = out_dir / "trace.json"
        prof.export_chrome_trace(str(trace))
        with trace.open("rb") as src, gzip.open(out_dir / "trace.json.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        trace.unlink()
    return report


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="scratch preset (tiny, small, gpt2)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per loop")
    parser.add_argument("--mirror", type=Path, default=MIRROR, help="a Gutenberg mirror folder")
    parser.add_argument(
        "--books", default=",".join(map(str, BOOKS)), help="Gutenberg ids, comma-separated"
    )
    parser.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS, help="for MFU")
    parser.add_argument("--batch-size", type=int, default=None, help="the project's trainer")
    parser.add_argument("--block-size", type=int, default=None, help="the project's trainer")
    parser.add_argument("--compile", action="store_true", help="torch.compile (the trainer)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--profile-dir", type=Path, default=None, help="profile here when short of the targets"
    )
    args = parser.parse_args()

    device = pick_device()
    epub = args.mirror / "cache" / "epub"
    texts = [
        r["text"]
        for b in map(int, args.books.split(","))
        for r in book_to_rows(b, (epub / f"{b}/pg{b}.txt").read_bytes())
    ]
    overrides = {
        k: v
        for k, v in (
            ("batch_size", args.batch_size),
            ("block_size", args.block_size),
            ("compile", args.compile or None),
        )
        if v is not None
    }
    profile_file = None
    lengths = None
    with tempfile.TemporaryDirectory() as tmp:
        init = build_scratch_model(f"scratch:{args.preset}", texts, Path(tmp) / "init")
        model, tokenizer = load_model(init)
        n_params = sum(p.numel() for p in model.parameters())
        lengths = [len(ids) + 2 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        shape = scratch_preset(f"scratch:{args.preset}")
        del model

        base_tps, base_ctx = baseline_tokens_per_second(init, texts, args.steps, device)
        proj_tps, proj_ctx, _ = project_tokens_per_second(init, texts, args.steps, **overrides)

        def mfu(tps: float, ctx: int) -> float:
            flops = flops_per_token(n_params, shape["n_layer"], shape["n_embd"], ctx)
            return tps * flops / (args.peak_tflops * 1e12)

        short = proj_tps / base_tps < TARGET_SPEEDUP or mfu(proj_tps, proj_ctx) < TARGET_MFU
        if args.profile_dir is not None and short:
            profile_file = profile_project(init, texts, args.profile_dir, device, **overrides)

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
    config = project_config(args.steps, **overrides)
    figures = {
        "device": name,
        "preset": f"scratch:{args.preset}",
        "parameters": n_params,
        "poems": len(texts),
        "steps": args.steps,
        "peak_tflops": args.peak_tflops,
        "baseline": {"tokens_per_s": base_tps, "mfu": mfu(base_tps, base_ctx), "context": base_ctx},
        "trainer": {
            "tokens_per_s": proj_tps,
            "mfu": mfu(proj_tps, proj_ctx),
            "batch_size": config.batch_size,
            "block_size": config.block_size,
            "compile": config.compile,
        },
        "speedup": proj_tps / base_tps,
        "targets": {"speedup": TARGET_SPEEDUP, "mfu": TARGET_MFU},
        "profile": str(profile_file) if profile_file else None,
    }
    if profile_file is not None:
        print(f"short of the targets ({TARGET_SPEEDUP:.0f}x, {TARGET_MFU:.0%} MFU): {profile_file}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
