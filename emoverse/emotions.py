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


def model_name(emotion: str) -> str:
    """The registered (and displayed) name of an emotion's model: `emoverse-joy`."""
    return MODEL_PREFIX + emotion


assert tuple(Emotion) == EMOTIONS, "Emotion must list EMOTIONS, in order"
