"""Model presets and the training configuration, in one place."""

from dataclasses import asdict, dataclass, field, replace
from typing import Any

SCRATCH_PREFIX = "scratch:"

# GPT-2-shaped configurations trained from scratch, for when no pretrained model can be had
# (offline, tests, CPU demos). Sizes in parameters with the preset's vocabulary.
SCRATCH_PRESETS: dict[str, dict[str, Any]] = {
    # ~1.35M parameters: trains in seconds per epoch on 2 CPU cores.
    "tiny": {"vocab_size": 4096, "n_positions": 256, "n_embd": 128, "n_layer": 4, "n_head": 4},
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
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> "TrainConfig":
        """A copy with the non-None overrides applied (CLI options and flow parameters)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# The base learns verse from nothing (on scratch presets); children only shift it.
BASE_TRAIN = TrainConfig(epochs=6, learning_rate=2e-3)
CHILD_TRAIN = TrainConfig(epochs=4, learning_rate=5e-4)
