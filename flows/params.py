"""Typed flow parameters: what the Prefect UI's run form shows, with a description per field
and a default for every one, so a run can be started from the form alone."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emoverse.settings import DEFAULT_BASE_MODEL
from models.config import BASE_TRAIN, CHILD_TRAIN, FOUNDATION_TRAIN, TrainConfig, is_scratch

DEFAULT_DATA_DIR = "data/run"  # relative to the working directory: the checkout, for workers


class TrainingSettings(BaseModel):
    """How the model family is trained and evaluated. Unset fields keep each stage's
    defaults (models/config.py)."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        DEFAULT_BASE_MODEL,
        description="What the neutral base starts from: a Hugging Face hub id (gpt2), a local "
        "model folder, or a from-scratch preset (scratch:tiny, scratch:small, scratch:gpt2).",
    )
    min_poems: int = Field(
        1, ge=1, description="Skip an emotion whose partition has fewer training poems."
    )
    foundation_epochs: int | None = Field(
        None, ge=1, description="Epochs of the foundation (scratch presets only)."
    )
    base_epochs: int | None = Field(None, ge=1, description="Epochs of the neutral base.")
    child_epochs: int | None = Field(None, ge=1, description="Epochs of each emotion child.")
    max_steps: int | None = Field(
        None, ge=1, description="Cap on optimizer steps per stage (smoke runs)."
    )
    batch_size: int | None = Field(None, ge=1, le=4096, description="Blocks per step.")
    block_size: int | None = Field(
        None, ge=8, le=8192, description="Tokens per packed training block."
    )
    learning_rate: float | None = Field(
        None, gt=0, le=1, description="Peak learning rate of every stage."
    )
    compile: bool | None = Field(None, description="torch.compile the model (GPUs).")
    adapter: Literal["lora"] | None = Field(
        None, description="Train the children as LoRA adapters on the base."
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='Any other training setting for every stage, e.g. {"warmup_steps": 20}.',
    )
    eval_samples: int = Field(
        16, ge=1, le=256, description="Poems generated per model to measure emotion fidelity."
    )

    @field_validator("base_model")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if is_scratch(value):
            from emoverse.errors import EmoverseError
            from models.config import scratch_preset

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
        return (
            FOUNDATION_TRAIN.with_overrides(**common, epochs=self.foundation_epochs),
            BASE_TRAIN.with_overrides(**common, epochs=self.base_epochs),
            CHILD_TRAIN.with_overrides(**common, epochs=self.child_epochs, adapter=self.adapter),
        )
