"""Dialling and blending emotions in weight space (task arithmetic, Ilharco et al. 2023).

Every child was fine-tuned from the same neutral base, so `child - base` is a direction in
weight space, and directions add:

    strength S of one emotion:   base + S * (child - base)
    a blend of several:          base + sum_e w_e * (child_e - base)

`resolve_recipe` reads the recipe's models from the registry (each emotion's current record,
champion or newest with the usual warning; the base is the one the children were trained
from, by their recorded `parent`), and refuses children of different bases or tokenizers
with an error naming the versions. `materialize` turns a recipe into a model folder that
`PoemGenerator` loads like any other:
- a recipe of weight 0 everywhere is the base's own folder, and one emotion at weight 1 the
  child's own folder: no merge, so those poems are exactly the base's and the child's;
- anything else is merged in float32 (a LoRA child is merged into its base first, which is
  the same as scaling its adapter) and saved as a Hugging Face folder (safetensors, the
  base's tokenizer and generation config, a card naming the recipe) under
  `<data-dir>/models/blends/<key>/`, keyed by the versions, folders and weights; written to a
  temporary folder and renamed, once per key across processes (a file lock), and only the
  newest `MAX_CACHED_BLENDS` are kept on disk.

Torch loads only when weights are checked or merged (the family report imports this module).
"""

import contextlib
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from filelock import FileLock

from emoverse.done import reuse_or_build, stage_key
from emoverse.emotions import EMOTIONS, NEUTRAL, model_name
from emoverse.errors import GenerationSettingError, IncompatibleModelsError
from models.folders.card import CARD_FILE
from models.registry.model_registry import ModelRecord

BLEND_VERSION = "1"  # bump when the same recipe would merge to other weights
MAX_BLEND_EMOTIONS = 3  # emotions in one blend
MAX_CACHED_BLENDS = 16  # merged folders kept on disk (each is a whole model)
# Strengths up to this keep the poems fluent on the benchmark family (bench/RESULTS.md,
# "Dialling emotions"): the page's slider stops here, and the CLI and server warn beyond it.
FLUENT_MAX_STRENGTH = 2.0
# Files that define a tokenizer: children that differ in them cannot be blended.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


class RecordSource(Protocol):
    """Where records come from: a `ModelRegistry`, or the server's cache in front of one."""

    def current(self, emotion: str) -> tuple[ModelRecord, str | None]: ...

    def get(self, emotion: str, *, version: int) -> ModelRecord: ...


@dataclass(frozen=True)
class Ingredient:
    record: ModelRecord  # the child
    weight: float


@dataclass(frozen=True)
class Recipe:
    """base + sum of weight * (child - base) over the ingredients (in the order asked)."""

    base: ModelRecord
    parts: tuple[Ingredient, ...]
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def active(self) -> tuple[Ingredient, ...]:
        """The ingredients that change the weights (weight above 0)."""
        return tuple(p for p in self.parts if p.weight != 0)

    def shortcut(self) -> str | None:
        """The folder to use as it is: the base's when every weight is 0, the child's when one
        emotion has weight 1 and the others 0; None when the recipe needs a merge."""
        active = self.active
        if not active:
            return self.base.path
        if len(active) == 1 and active[0].weight == 1:
            return active[0].record.path
        return None

    def key(self) -> str:
        """Names the merged weights: versions, folders and weights (zero weights left out)."""
        return stage_key(
            [
                BLEND_VERSION,
                [self.base.version, str(self.base.path)],
                sorted(
                    [p.record.emotion, p.record.version, str(p.record.path), float(p.weight)]
                    for p in self.active
                ),
            ],
            16,
        )

    def describe(self) -> str:
        """`emoverse-neutral v1 + 0.7 × (emoverse-joy v3 − base) + 0.5 × (emoverse-fear v2 −
        base)`: every version and weight."""
        terms = [f"{model_name(NEUTRAL)} v{self.base.version}"]
        terms += [
            f"{_num(p.weight)} × ({model_name(p.record.emotion)} v{p.record.version} − base)"
            for p in self.parts
        ]
        return " + ".join(terms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": {"emotion": NEUTRAL, "version": self.base.version},
            "emotions": [
                {"emotion": p.record.emotion, "version": p.record.version, "weight": p.weight}
                for p in self.parts
            ],
            "formula": self.describe(),
        }


def _num(value: float) -> str:
    return f"{value:g}"


def check_weights(weights: Mapping[str, float], *, option: str = "blend") -> dict[str, float]:
    """The weights as {emotion: float}, or a GenerationSettingError naming `option`: one to
    MAX_BLEND_EMOTIONS of the eight emotions (not neutral: the base is in every recipe), each
    weight within BOUNDS["strength"]."""
    from models.generation.generate import BOUNDS  # torch: only when weights are checked

    lo, hi = BOUNDS["strength"]
    if not weights:
        raise GenerationSettingError(option, "must name at least one emotion")
    if len(weights) > MAX_BLEND_EMOTIONS:
        raise GenerationSettingError(
            option, f"may mix at most {MAX_BLEND_EMOTIONS} emotions, got {len(weights)}"
        )
    checked: dict[str, float] = {}
    for emotion, weight in weights.items():
        if emotion not in EMOTIONS:
            raise GenerationSettingError(
                option, f"names {emotion!r}; one of: {', '.join(EMOTIONS)} (the base is neutral)"
            )
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise GenerationSettingError(option, f"weight of {emotion} must be a number")
        if not lo <= weight <= hi:
            raise GenerationSettingError(
                option,
                f"weight of {emotion} must be between {_num(lo)} and {_num(hi)}, "
                f"got {_num(weight)}",
            )
        checked[emotion] = float(weight)
    return checked


def parse_blend(text: str) -> dict[str, float]:
    """`joy=0.7,fear=0.5` as {joy: 0.7, fear: 0.5}, bounds checked (the CLI's `--blend`)."""
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, number = item.strip().partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise GenerationSettingError("blend", f"wants EMOTION=WEIGHT[,...], got {item!r}")
        try:
            weight = float(number)
        except ValueError:
            raise GenerationSettingError(
                "blend", f"weight of {name} must be a number, got {number.strip()!r}"
            ) from None
        if name in weights:
            raise GenerationSettingError("blend", f"names {name} twice")
        weights[name] = weight
    return check_weights(weights)


def dial_warning(weights: Mapping[str, float]) -> str | None:
    """A warning when the weights add up past FLUENT_MAX_STRENGTH, else None."""
    total = sum(weights.values())
    if total <= FLUENT_MAX_STRENGTH:
        return None
    what = f"strength {_num(total)}" if len(weights) == 1 else f"weights adding up to {_num(total)}"
    return (
        f"{what}: beyond {_num(FLUENT_MAX_STRENGTH)} the poems lose their fluency on the "
        "benchmark family (bench/RESULTS.md); expect broken verse"
    )


def base_version(record: ModelRecord) -> int | None:
    """The neutral base version a child records as its parent, or None (another lineage)."""
    return record.parent_version


def tokenizer_fingerprint(model_dir: str | Path) -> str:
    """A hash of the tokenizer files in a model folder (what children must share). Model
    folders never change once written, so each is read once per process."""
    return _tokenizer_fingerprint(str(Path(model_dir).resolve()))


@functools.lru_cache(maxsize=128)
def _tokenizer_fingerprint(model_dir: str) -> str:
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            data = path.read_bytes()
            if name == "tokenizer_config.json":
                # model_max_length is the model's context, not the vocabulary: a base saved
                # before it was fitted (1e30) still blends with children saved after.
                config = json.loads(data)
                config.pop("model_max_length", None)
                data = json.dumps(config, sort_keys=True).encode()
            digest.update(name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def resolve_recipe(source: RecordSource, weights: Mapping[str, float]) -> Recipe:
    """The recipe for `weights` ({emotion: weight}, checked as `check_weights` does): each
    emotion's current model and the base they were all trained from. IncompatibleModelsError,
    naming the versions, when a child's lineage is not a registered neutral base, when the
    children come from different bases, or when their tokenizers differ."""
    weights = check_weights(weights)
    parts, warnings = [], []
    for emotion, weight in weights.items():
        record, warning = source.current(emotion)
        parts.append(Ingredient(record, weight))
        if warning:
            warnings.append(warning)
    names = {p.record.emotion: f"{model_name(p.record.emotion)} v{p.record.version}" for p in parts}
    lineage = {p.record.emotion: base_version(p.record) for p in parts}
    unknown = [e for e, v in lineage.items() if v is None]
    if unknown:
        raise IncompatibleModelsError(
            "cannot dial or blend "
            + ", ".join(f"{names[e]} (trained from {_parent_of(parts, e)!r})" for e in unknown)
            + f": its parent is not a version of {model_name(NEUTRAL)}, so there is no base to "
            "measure it from"
        )
    if len(set(lineage.values())) > 1:
        raise IncompatibleModelsError(
            "cannot blend children of different bases: "
            + ", ".join(f"{names[e]} from {model_name(NEUTRAL)} v{v}" for e, v in lineage.items())
            + "; retrain them from one base (`emoverse train`) or promote versions that share one"
        )
    base = source.get(NEUTRAL, version=next(iter(lineage.values())))
    base_tokenizer = tokenizer_fingerprint(base.path)
    other = [p for p in parts if tokenizer_fingerprint(p.record.path) != base_tokenizer]
    if other:
        raise IncompatibleModelsError(
            "cannot blend: the tokenizer of "
            + ", ".join(names[p.record.emotion] for p in other)
            + f" differs from that of its base {model_name(NEUTRAL)} v{base.version}"
        )
    return Recipe(base, tuple(parts), tuple(warnings))


def _parent_of(parts: list[Ingredient], emotion: str) -> str:
    return next(p.record.parent for p in parts if p.record.emotion == emotion)


def materialize(recipe: Recipe, cache_root: str | Path, *, keep: int = MAX_CACHED_BLENDS) -> Path:
    """The model folder of `recipe`: the base's or the child's own (see `Recipe.shortcut`),
    else the merged folder under `cache_root`, merged now unless an earlier call did."""
    if (folder := recipe.shortcut()) is not None:
        return Path(folder)
    cache_root = Path(cache_root)
    folder = cache_root / recipe.key()
    if folder.is_dir():
        _touch(folder)
        return folder
    cache_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_root / f".{recipe.key()}.lock"), timeout=600):
        # Another process may have merged it while we waited; written whole, then renamed.
        reuse_or_build(folder, lambda out: merge_weights(recipe, out), done=Path.is_dir)
    _touch(folder)
    prune(cache_root, keep)
    return folder


def _touch(folder: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(folder)  # the newest used stay when the cache is pruned


def prune(cache_root: Path, keep: int) -> list[Path]:
    """Remove all but the `keep` most recently used merged folders; returns those removed.
    A server that loaded one keeps it in memory; a later request merges it again."""
    folders = sorted(
        (p for p in Path(cache_root).iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    removed = folders[keep:]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
        (Path(cache_root) / f".{folder.name}.lock").unlink(missing_ok=True)
    return removed


def merge_weights(recipe: Recipe, out_dir: Path) -> Path:
    """Write `base + sum w * (child - base)` into `out_dir` as a Hugging Face folder: computed
    in float32, saved in the base's dtype, with the base's tokenizer and generation config and
    a card naming the recipe."""
    # torch loads only when weights are merged: the family report imports this module in flows.
    import torch
    from transformers import AutoTokenizer, GenerationConfig

    from models.folders.model_folder import load_model, write_model_folder

    base_model, _ = load_model(recipe.base.path)
    base_state = base_model.state_dict()
    dtypes = {k: v.dtype for k, v in base_state.items()}
    base32 = {k: v.detach().to(torch.float32).clone() for k, v in base_state.items()}
    merged = {k: v.clone() for k, v in base32.items()}
    for part in recipe.active:
        child, _ = load_model(part.record.path)  # a LoRA child comes merged into its base
        child_state = child.state_dict()
        name = f"{model_name(part.record.emotion)} v{part.record.version}"
        if child_state.keys() != base32.keys() or any(
            child_state[k].shape != v.shape for k, v in base32.items()
        ):
            raise IncompatibleModelsError(
                f"cannot blend {name}: its weights do not have the shape of its base "
                f"{model_name(NEUTRAL)} v{recipe.base.version}"
            )
        with torch.no_grad():
            for k, base_value in base32.items():
                if base_value.is_floating_point():
                    merged[k] += part.weight * (child_state[k].to(torch.float32) - base_value)
        del child, child_state
    base_model.load_state_dict({k: v.to(dtypes[k]) for k, v in merged.items()})
    tokenizer = AutoTokenizer.from_pretrained(recipe.base.path)
    generation = Path(recipe.base.path) / "generation_config.json"
    return write_model_folder(
        base_model,
        tokenizer,  # fitted to the model there: a base saved before it was fitted
        Path(out_dir),
        # The base's own sampling settings, where its folder has them.
        generation_config=GenerationConfig.from_pretrained(recipe.base.path)
        if generation.is_file()
        else None,
        extras=lambda folder: (folder / CARD_FILE).write_text(blend_card(recipe)),
    )


def blend_card(recipe: Recipe) -> str:
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["emoverse", "poetry", "task-arithmetic"]
        + [f"emotion-{p.record.emotion}" for p in recipe.active],
        "emotion": "blend",
        "base_model": str(recipe.base.path),
        "recipe": {
            **recipe.to_dict(),
            "folders": {
                "base": str(recipe.base.path),
                **{p.record.emotion: str(p.record.path) for p in recipe.parts},
            },
            "blend_version": BLEND_VERSION,
        },
    }
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n\n"
        "# emoverse blend\n\n"
        f"Weights merged by task arithmetic: **{recipe.describe()}**, where each "
        "`(child − base)` is what that emotion's fine-tuning changed in the base's weights. "
        "Not trained, not evaluated: a blend of registered models, cached for reuse.\n"
    )
