"""Which model writes an emotion's poems: its own model from the family (the default), the
conditional model told the emotion by a control token, or whichever of the two the registry
records as better for it (`best`). The CLI and the server both ask here."""

from dataclasses import dataclass
from typing import Literal

from emoverse.emotions import CONDITIONAL, check_label, control_token, model_name
from emoverse.errors import GenerationSettingError
from models.registry import ModelRecord, ModelRegistry

ModelChoice = Literal["family", "conditional", "best"]
MODEL_CHOICES: tuple[str, ...] = ("family", "conditional", "best")


@dataclass(frozen=True)
class Choice:
    record: ModelRecord
    warning: str | None  # no champion: the newest version is used (ModelRegistry.current)
    control: str | None  # the control token to prompt with: the conditional model only
    reason: str | None = None  # why `best` chose this model

    def describe(self, emotion: str) -> str:
        """`emoverse-joy v3`, or `emoverse-conditional v1 as joy`."""
        name = f"{model_name(self.record.emotion)} v{self.record.version}"
        return f"{name} as {emotion}" if self.control else name


def choose_model(registry: ModelRegistry, emotion: str, model: str = "family") -> Choice:
    """The model that writes `emotion` for `model` (one of MODEL_CHOICES). `best` follows the
    preference `train-conditional` recorded (`ModelRegistry.preferred`): the conditional
    version it names, else the emotion's own current model."""
    check_label(emotion)
    if model == "family":
        return Choice(*registry.current(emotion), control=None)
    if model == "conditional":
        return Choice(*registry.current(CONDITIONAL), control=control_token(emotion))
    if model != "best":
        raise GenerationSettingError(
            "model", f"must be one of {', '.join(MODEL_CHOICES)}, got {model!r}"
        )
    preferred = registry.preferred(emotion)
    if preferred is not None and preferred.get("model") == "conditional":
        record = registry.get(CONDITIONAL, version=int(preferred["version"]))
        return Choice(record, None, control_token(emotion), preferred.get("reason"))
    record, warning = registry.current(emotion)
    reason = (
        preferred.get("reason")
        if preferred is not None
        else "no comparison with the conditional model recorded: the family's own model"
    )
    return Choice(record, warning, None, reason)
