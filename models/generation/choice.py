"""Which model writes an emotion's poems: its own model from the family (the default), the
conditional model told the emotion by a control token, or whichever of the two the registry
records as better for it (`best`). The CLI and the server both ask here."""

from dataclasses import dataclass
from typing import Any, Literal

from emoverse.emotions import CONDITIONAL, check_label, control_token, model_name
from emoverse.errors import GenerationSettingError, NoModelError
from models.evaluation.promotion import preference_decision
from models.records import Evaluation
from models.registry.model_registry import ModelRecord, ModelRegistry

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
    missing: NoModelError | None = None
    try:
        record, warning = registry.current(emotion)
    except NoModelError as exc:  # the conditional model may still speak for it
        record, warning, missing = None, None, exc
    current = record.version if record else None
    if preferred is not None and preferred.get("child_version") != current:
        # The family was trained again since the comparison: it says nothing of this child.
        stale = (
            f"the comparison recorded was with {model_name(emotion)} "
            f"v{preferred.get('child_version')}, now v{current}: the family's own model "
            "until train-conditional compares them again"
        )
        preferred = {"model": "family", "reason": stale}
    if preferred is not None and preferred.get("model") == "conditional":
        chosen = registry.get(CONDITIONAL, version=int(preferred["version"]))
        return Choice(chosen, None, control_token(emotion), preferred.get("reason"))
    if missing is not None:
        raise missing
    reason = (
        preferred.get("reason")
        if preferred is not None
        else "no comparison with the conditional model recorded: the family's own model"
    )
    return Choice(record, warning, None, reason)


def record_preferences(
    registry: ModelRegistry, conditional: ModelRecord, evaluations: dict[str, Evaluation]
) -> dict[str, dict[str, Any]]:
    """Per emotion, whether `conditional` or the emotion's current child writes it better
    (the promotion rule, the child in the base's place: `preference_decision`), recorded in
    the registry for `best`; the records, by emotion."""
    recorded: dict[str, dict[str, Any]] = {}
    for emotion, evaluation in evaluations.items():
        child = _child_evaluation(registry, emotion)
        child_name = f"{model_name(emotion)} v{child[0].version}" if child else "child"
        preference = preference_decision(
            evaluation, child[1] if child else None, child_name=child_name
        )
        chosen = conditional if preference.promoted or child is None else child[0]
        recorded[emotion] = {
            "model": "conditional" if chosen is conditional else "family",
            "version": chosen.version,
            "reason": f"{model_name(CONDITIONAL)} v{conditional.version}: {preference.text}",
            "conditional_version": conditional.version,
            "child_version": child[0].version if child else None,
        }
        registry.set_preferred(emotion, recorded[emotion])
    return recorded


def _child_evaluation(
    registry: ModelRegistry, emotion: str
) -> tuple[ModelRecord, Evaluation] | None:
    """The emotion's current child (champion, else newest) with its evaluation, or None."""
    try:
        child, _ = registry.current(emotion)
    except NoModelError:
        return None
    evaluation = child.evaluation
    return (child, evaluation) if evaluation is not None else None
