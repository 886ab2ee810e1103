"""The label set: NRC's eight basic emotions plus `neutral`."""

from enum import StrEnum

from emoverse.errors import UnknownEmotionError

# Order follows the NRC Emotion Lexicon; it is also the column order of the count columns.
EMOTIONS: tuple[str, ...] = (
    "anger",
    "anticipation",
    "disgust",
    "fear",
    "joy",
    "sadness",
    "surprise",
    "trust",
)
NEUTRAL = "neutral"
# Not a label: what the neutral base of a from-scratch preset starts from (models/foundation/).
FOUNDATION = "foundation"
MODEL_PREFIX = "emoverse-"
# Not a label: the one model that writes every label, told which by a control token
# (`<|joy|>` before the poem); registered as `emoverse-conditional` beside the family.
CONDITIONAL = "conditional"


class Emotion(StrEnum):
    """The eight emotions a child model is trained for (a typed choice in forms and APIs)."""

    anger = "anger"
    anticipation = "anticipation"
    disgust = "disgust"
    fear = "fear"
    joy = "joy"
    sadness = "sadness"
    surprise = "surprise"
    trust = "trust"


LABELS: tuple[str, ...] = (*EMOTIONS, NEUTRAL)
# NRC also scores polarity; we keep the counts but never label by them.
POLARITIES: tuple[str, ...] = ("positive", "negative")


def check_label(name: str) -> str:
    """Return `name` if it is one of the nine labels, else raise a clear error listing them."""
    if name not in LABELS:
        raise UnknownEmotionError(f"unknown emotion {name!r}; valid emotions: {', '.join(LABELS)}")
    return name


def check_model_key(name: str) -> str:
    """`name` if the registry keeps a model under it: one of the nine labels, or the
    conditional model; else a clear error listing them."""
    if name != CONDITIONAL:
        check_label(name)
    return name


def control_token(label: str) -> str:
    """The conditional model's control token for a label: `<|joy|>`."""
    return f"<|{check_label(label)}|>"


CONTROL_TOKENS: tuple[str, ...] = tuple(f"<|{label}|>" for label in LABELS)


def model_name(emotion: str) -> str:
    """The registered (and displayed) name of an emotion's model: `emoverse-joy`."""
    return MODEL_PREFIX + emotion


assert tuple(Emotion) == EMOTIONS, "Emotion must list EMOTIONS, in order"
