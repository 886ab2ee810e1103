"""Model presets and the training configuration, in one place."""

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

SCRATCH_PREFIX = "scratch:"
ADAPTERS = (None, "lora")

# GPT-2-shaped configurations trained from scratch, for when no pretrained model can be had
# (offline, tests, CPU demos). Sizes in parameters with the preset's vocabulary.
SCRATCH_PRESETS: dict[str, dict[str, Any]] = {
    # ~1.35M parameters: trains in seconds per epoch on 2 CPU cores (tests, demos).
    "tiny": {"vocab_size": 4096, "n_positions": 256, "n_embd": 128, "n_layer": 4, "n_head": 4},
    # ~29.5M parameters: a GPU preset, minutes for the whole family on one card.
    "small": {"vocab_size": 8192, "n_positions": 512, "n_embd": 512, "n_layer": 8, "n_head": 8},
    # The GPT-2 124M shape, for throughput benchmarks and the largest from-scratch family.
    "gpt2": {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12},
}


def is_scratch(base_model: str) -> bool:
    return base_model.startswith(SCRATCH_PREFIX)


def scratch_preset(base_model: str) -> dict[str, Any]:
    """The GPT2Config keyword arguments of a `scratch:<name>` base model."""
    from emoverse.errors import EmoverseError

    name = base_model.removeprefix(SCRATCH_PREFIX)
    if name not in SCRATCH_PRESETS:
        raise EmoverseError(
            f"unknown scratch preset {base_model!r}; valid: "
            + ", ".join(SCRATCH_PREFIX + n for n in SCRATCH_PRESETS)
        )
    return dict(SCRATCH_PRESETS[name])


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fine-tuning stage. Defaults suit `scratch:tiny` on a CPU."""

    epochs: int = 4
    batch_size: int = 16
    block_size: int = 128  # tokens per packed training block
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decay floor, as a share of learning_rate
    warmup_steps: int = 10
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_steps: int | None = None  # cap on optimizer steps, over all epochs
    patience: int = 1  # epochs without a better validation loss before stopping
    checkpoint_every: int = 50  # optimizer steps between resumable checkpoints
    compile: bool = False  # torch.compile the model: faster steps on GPUs after a warm-up
    adapter: str | None = None  # "lora": train a PEFT LoRA adapter instead of every weight
    lora_rank: int = 8
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> "TrainConfig":
        """A copy with the non-None overrides applied (CLI options and flow parameters)."""
        from emoverse.errors import EmoverseError

        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise EmoverseError(
                f"unknown training setting(s) {', '.join(unknown)}; valid: "
                + ", ".join(f.name for f in fields(self))
            )
        config = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        if config.adapter not in ADAPTERS:
            raise EmoverseError(f"unknown adapter {config.adapter!r}; valid: lora")
        return config


# Per-stage defaults. The foundation (scratch presets only) learns verse from every poem;
# the neutral base adapts it; children only shift the base, gently, and stop early.
FOUNDATION_TRAIN = TrainConfig(epochs=8, learning_rate=2e-3, patience=2)
BASE_TRAIN = TrainConfig(epochs=6, learning_rate=1e-3)
CHILD_TRAIN = TrainConfig(epochs=4, learning_rate=5e-4)
