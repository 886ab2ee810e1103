"""Model presets, the bounds of every training and evaluation setting, the per-stage training
configuration and `TrainingSettings`, the one settings object that the CLI's flags, the flows'
parameters and the stages' configurations all come from. No torch here: flows import it."""

from dataclasses import asdict, fields, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass as validated

from emoverse.errors import EmoverseError, SettingError
from emoverse.settings import DEFAULT_BASE_MODEL

SCRATCH_PREFIX = "scratch:"
ADAPTERS = (None, "lora")

# How poems are sampled unless asked otherwise, once: mildly cooled nucleus sampling that never
# repeats a 3-gram (small models otherwise loop on a line). A model folder's generation config
# and `SamplingSettings` / `GenerationRequest` (the CLI's flags, the server's fields) use them.
TEMPERATURE = 0.9
TOP_K = 50
TOP_P = 0.95
NO_REPEAT_NGRAM_SIZE = 3
MAX_NEW_TOKENS = 120

# The bounds of every setting, once: TrainConfig, EvalConfig and TrainingSettings use them, and
# the CLI's flags are made from TrainingSettings.
PositiveInt = Annotated[int, Field(ge=1)]
Epochs = Annotated[int, Field(ge=1, le=1000)]
Steps = Annotated[int, Field(ge=1, le=10**7)]
BatchSize = Annotated[int, Field(ge=1, le=4096)]
BlockSize = Annotated[int, Field(ge=8, le=8192)]
LearningRate = Annotated[float, Field(gt=0, le=1)]
Share = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
MinPoems = Annotated[int, Field(ge=1, le=10**6)]
EvalSamples = Annotated[int, Field(ge=1, le=256)]
Adapter = Literal["lora"]
# The children's fine-tuning as a choice in the UI's run form: every weight, or a LoRA adapter.
ChildTuning = Literal["full", "lora"]
# How the conditional model mixes the partitions (models/training/conditional.py).
Balance = Literal["plain", "sqrt"]
# What `train` trains: the family (base and eight children), the conditional model, or both.
TrainMode = Literal["family", "conditional", "both"]
TRAIN_MODES: tuple[str, ...] = ("family", "conditional", "both")

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
    name = base_model.removeprefix(SCRATCH_PREFIX)
    if name not in SCRATCH_PRESETS:
        raise EmoverseError(
            f"unknown scratch preset {base_model!r}; valid: "
            + ", ".join(SCRATCH_PREFIX + n for n in SCRATCH_PRESETS)
        )
    return dict(SCRATCH_PRESETS[name])


@validated(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fine-tuning stage. Defaults suit `scratch:tiny` on a CPU."""

    epochs: Epochs = 4
    batch_size: BatchSize = 16
    block_size: BlockSize = 128  # tokens per packed training block
    learning_rate: LearningRate = 1e-3
    min_lr_ratio: Share = 0.1  # cosine decay floor, as a share of learning_rate
    warmup_steps: Annotated[int, Field(ge=0)] = 10
    weight_decay: NonNegative = 0.01
    grad_clip: NonNegative = 1.0
    max_steps: Steps | None = None  # cap on optimizer steps, over all epochs
    patience: PositiveInt = 1  # epochs without a better validation loss before stopping
    checkpoint_every: PositiveInt = 50  # optimizer steps between resumable checkpoints
    compile: bool = False  # torch.compile the model: faster steps on GPUs after a warm-up
    adapter: Adapter | None = None  # "lora": train a PEFT LoRA adapter instead of every weight
    lora_rank: PositiveInt = 8
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> "TrainConfig":
        """A copy with the non-None overrides applied (CLI options and flow parameters)."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise EmoverseError(
                f"unknown training setting(s) {', '.join(unknown)}; valid: "
                + ", ".join(f.name for f in fields(self))
            )
        try:
            return replace(self, **{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise setting_error(exc) from None


# Per-stage defaults. The foundation (scratch presets only) learns verse from every poem;
# the neutral base adapts it; children only shift the base, gently, and stop early.
FOUNDATION_TRAIN = TrainConfig(epochs=8, learning_rate=2e-3, patience=2)
BASE_TRAIN = TrainConfig(epochs=6, learning_rate=1e-3)
CHILD_TRAIN = TrainConfig(epochs=4, learning_rate=5e-4)


class TrainingSettings(BaseModel):
    """How the model family is trained and evaluated: the `settings` parameter of the training
    flows and the training flags of the CLI. Unset fields keep each stage's defaults above."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Real defaults (the stages' own), not None, where one exists: the UI's run form shows
    # them; only a cap (max_steps) and the per-stage learning rate stay optional.
    base_model: str = Field(
        DEFAULT_BASE_MODEL,
        description="What the neutral base starts from: a Hugging Face hub id (gpt2), a local "
        "model folder, or a from-scratch preset (scratch:tiny, scratch:small, scratch:gpt2).",
    )
    min_poems: MinPoems = Field(
        1, description="Skip an emotion whose partition has fewer training poems."
    )
    foundation_epochs: Epochs = Field(
        FOUNDATION_TRAIN.epochs, description="Epochs of the foundation (scratch presets only)."
    )
    base_epochs: Epochs = Field(BASE_TRAIN.epochs, description="Epochs of the neutral base.")
    child_epochs: Epochs = Field(CHILD_TRAIN.epochs, description="Epochs of each emotion child.")
    max_steps: Steps | None = Field(
        None, description="Cap on optimizer steps per stage (smoke runs)."
    )
    batch_size: BatchSize = Field(TrainConfig.batch_size, description="Blocks per step.")
    block_size: BlockSize = Field(
        TrainConfig.block_size, description="Tokens per packed training block."
    )
    learning_rate: LearningRate | None = Field(
        None, description="Peak learning rate of every stage (unset: each stage's own)."
    )
    compile: bool = Field(False, description="torch.compile the model (GPUs).")
    adapter: ChildTuning = Field(
        "full",
        description="How the children are fine-tuned from the base: every weight (full) or "
        "as LoRA adapters (lora).",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='Any other training setting for every stage, e.g. {"warmup_steps": 20}.',
    )
    conditional_epochs: Epochs = Field(
        BASE_TRAIN.epochs, description="Epochs of the conditional model (one model, every label)."
    )
    conditional_max_steps: Steps | None = Field(
        None,
        description="Cap on the conditional model's optimizer steps (default: max_steps); "
        "e.g. the family's steps summed, to compare at one budget.",
    )
    conditional_balance: Balance = Field(
        "sqrt",
        description="How the conditional model mixes the partitions: plain (each poem once) "
        "or sqrt (each partition repeated up to sqrt(n x largest) poems: small emotions "
        "weigh more).",
    )
    eval_samples: EvalSamples = Field(
        64,
        description="Poems generated per model to measure emotion fidelity (shares move in "
        "steps of 1/n; the promotion gate needs enough of them to see a difference).",
    )

    @field_validator("overrides")
    @classmethod
    def _not_a_named_setting(cls, value: dict[str, Any]) -> dict[str, Any]:
        named = sorted(set(value) & (set(cls.model_fields) | {"epochs"}))
        if named:
            raise ValueError(f"overrides may not name {', '.join(named)}: a setting of its own")
        return value

    @field_validator("base_model")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if is_scratch(value):
            try:
                scratch_preset(value)
            except EmoverseError as exc:  # pydantic reports ValueErrors against the field
                raise ValueError(str(exc)) from None
        return value

    def stage_configs(self) -> tuple[TrainConfig, TrainConfig, TrainConfig]:
        """The foundation's, the neutral base's and the children's training settings."""
        named = ("max_steps", "batch_size", "block_size", "learning_rate", "compile")
        common = {
            **self.overrides,
            **{k: v for k in named if (v := getattr(self, k)) is not None},
        }
        adapter = None if self.adapter == "full" else self.adapter
        return (
            FOUNDATION_TRAIN.with_overrides(**common, epochs=self.foundation_epochs),
            BASE_TRAIN.with_overrides(**common, epochs=self.base_epochs),
            CHILD_TRAIN.with_overrides(**common, epochs=self.child_epochs, adapter=adapter),
        )

    def conditional_config(self) -> TrainConfig:
        """The conditional model's training settings: the neutral base's recipe (it learns
        every label from the same start), with the shared overrides."""
        named = ("batch_size", "block_size", "learning_rate", "compile")
        common = {
            **self.overrides,
            **{k: v for k in named if (v := getattr(self, k)) is not None},
        }
        steps = self.conditional_max_steps or self.max_steps
        return BASE_TRAIN.with_overrides(**common, epochs=self.conditional_epochs, max_steps=steps)


def setting_error(error: ValidationError) -> EmoverseError:
    """A pydantic error as one line naming the field: `batch_size should be ..., got 0` (a
    SettingError, which a CLI words with its flag); a validator's own message (an unknown
    preset) as it is."""
    first = error.errors()[0]
    message = first["msg"]
    if first["type"] == "value_error":
        return EmoverseError(message.removeprefix("Value error, "))
    name = ".".join(str(part) for part in first["loc"]) or "value"
    problem = message.removeprefix("Input ")  # "Input should be ..." -> "should be ..."
    return SettingError(name, f"{problem[:1].lower()}{problem[1:]}, got {first.get('input')!r}")
