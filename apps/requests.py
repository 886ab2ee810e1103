"""One home for the rules of a generation request, for the CLI and the HTTP server alike.

A request names what writes the poems and how they are sampled:

    emotion   one of the nine labels, written by the model `model` chooses:
              family (the emotion's own, the default), conditional, or best (as the registry
              records it); `strength` dials a family child from 0 (its base) to 3
    blend     {emotion: weight} instead of an emotion: base + sum weight * (child - base)
    options   prompt, n, seed, max_new_tokens, temperature, top_k, top_p, no_repeat_ngram_size,
              within `models.generation.generate.BOUNDS`
    form      lines (exact), stanzas (an even split: lines a multiple of stanzas), rhyme (a
              scheme such as AABB, ABAB, ABBA, AAAA, or none; no longer than the lines, which
              must be a multiple of it, as it repeats with fresh rhymes); max_new_tokens must
              leave every line room (`models.generation.form.tokens_needed`); the prompt is
              then the first line's start (no line breaks)

`resolve` checks them and returns a `Wanted`: the emotion, the model choice, the recipe's
weights (None: one model as it is) and the `GenerationRequest`. A broken rule is a
`RequestRuleError` whose message names the fields as the interface does (`Names`: `--strength`
on the command line, `strength` in an HTTP body); an option out of bounds is the library's
`GenerationSettingError`, naming the option. The interfaces check types and their own limits
first (argparse, pydantic), then call this.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emoverse.emotions import EMOTIONS, check_label
from emoverse.errors import EmoverseError, GenerationSettingError
from models.generation.blend import check_weights, dial_warning
from models.generation.generate import GenerationRequest

# The sampling and batch options, by their field names (CLI flags and HTTP fields alike).
OPTIONS = (
    *("prompt", "n", "seed", "max_new_tokens"),
    *("temperature", "top_k", "top_p", "no_repeat_ngram_size"),
    *("lines", "stanzas", "rhyme"),  # form: models/generation/form.py
)


@dataclass(frozen=True)
class Names:
    """How an interface names the request's fields in its messages."""

    emotion: str = "emotion"
    blend: str = "blend"
    strength: str = "strength"
    model: str = "model"


FIELDS = Names()  # an HTTP body's
FLAGS = Names("--emotion", "--blend", "--strength", "--model")  # the CLI's


class RequestRuleError(EmoverseError):
    """Parts of a request that do not go together (or a blend's weights out of bounds)."""


@dataclass(frozen=True)
class Wanted:
    """What to generate: `weights` is the recipe of a dialled or blended model, or None for
    `emotion`'s model as `model` chooses it."""

    emotion: str | None  # None for a blend
    model: str
    weights: dict[str, float] | None
    request: GenerationRequest

    @property
    def dial_warning(self) -> str | None:
        """A warning when the weights go past the strengths that stay fluent."""
        return dial_warning(self.weights) if self.weights is not None else None


def recipe_weights(
    emotion: str | None,
    model: str,
    strength: float | None,
    blend: Mapping[str, float] | None,
    names: Names = FIELDS,
) -> dict[str, float] | None:
    """The recipe's weights, or None for the emotion's model as it is (no strength, or 1);
    a RequestRuleError when the parts do not go together."""
    n = names
    if emotion is not None:
        check_label(emotion)
    if (emotion is None) == (blend is None):
        raise RequestRuleError(
            f"give either {n.emotion} (with {n.strength}) or {n.blend} ({{emotion: weight, ...}})"
        )
    if blend is not None and strength is not None:
        raise RequestRuleError(
            f"{n.strength} scales one {n.emotion}; give either {n.emotion} (with {n.strength}) "
            f"or {n.blend} ({{emotion: weight, ...}})"
        )
    if model != "family" and (blend is not None or strength is not None):
        raise RequestRuleError(
            f"{n.model} {model} writes one {n.emotion}'s poems as they are; {n.strength} and "
            f"{n.blend} dial the family's children ({n.model} family)"
        )
    if blend is not None:
        try:
            return check_weights(blend)
        except GenerationSettingError as exc:
            raise RequestRuleError(f"{n.blend} {exc.problem}") from None
    if strength is None or strength == 1:
        return None  # strength 1 is the emotion's own model
    if emotion not in EMOTIONS:
        raise RequestRuleError(
            f"{n.strength} dials one of the eight emotions ({', '.join(EMOTIONS)}), not "
            "neutral, the base itself"
        )
    return {emotion: strength}


def resolve(
    *,
    emotion: str | None,
    model: str = "family",
    strength: float | None = None,
    blend: Mapping[str, float] | None = None,
    options: Mapping[str, Any],
    names: Names = FIELDS,
) -> Wanted:
    """The request checked: its rules (`recipe_weights`), then its options' bounds
    (`GenerationRequest.validate`), before any model is loaded or merged."""
    weights = recipe_weights(emotion, model, strength, blend, names)
    request = GenerationRequest.from_options(**{name: options[name] for name in OPTIONS})
    return Wanted(emotion, model, weights, request.validate())
