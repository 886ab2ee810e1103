"""Where a training stage's starting model comes from: a Hugging Face id or folder, or a
GPT-2 configuration built from scratch with a tokenizer trained on the corpus."""

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from emoverse.atomic import atomic_path, sha256_file
from emoverse.emotions import CONTROL_TOKENS
from emoverse.errors import EmoverseError, SettingError
from models.config import (
    MAX_NEW_TOKENS,
    NO_REPEAT_NGRAM_SIZE,
    TEMPERATURE,
    TOP_K,
    TOP_P,
    scratch_preset,
)
from models.folders.card import CARD_FILE, read_card_metadata
from models.training.tokenizer import train_bpe_tokenizer

ADAPTER_CONFIG = "adapter_config.json"  # what PEFT writes beside an adapter's weights
WEIGHTS_KEY = "weights"  # card metadata and registry tag: {file: {size, sha256}}
REBUILD_HINT = "`emoverse run` re-trains it"


class DamagedModelError(EmoverseError):
    """A model folder whose weights are missing, damaged or do not fit its config."""


# Weight-loading bars would interleave with our own training bars.
hf_logging.disable_progress_bar()


# --- the weights' record: sizes and sha256 ---------------------------------------------------


def weight_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("*.safetensors"))


def weight_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """{file name: {size, sha256}} of a folder's safetensors files (recorded at save and at
    registration, checked on load)."""
    return {
        p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in weight_files(folder)
    }


def recorded_digests(folder: Path) -> dict[str, dict[str, Any]] | None:
    """The digests the folder's card recorded when it was saved, or None (no card, or one
    written before digests were recorded)."""
    if not (Path(folder) / CARD_FILE).is_file():
        return None
    try:
        found = read_card_metadata(folder).get(WEIGHTS_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, dict) and found else None


_verified: set[tuple[str, str, int, int]] = set()  # (file, sha256, size, mtime) hashed already
_verified_lock = threading.Lock()


def verify_weights(folder: Path, expected: dict[str, dict[str, Any]] | None = None) -> None:
    """Check a model folder's weight files against their record (`expected`, else the card's):
    the size on every call, the sha256 once per process per file. Raises DamagedModelError
    naming the file and how to rebuild it. A folder with no record is only checked for
    weights being there."""
    folder = Path(folder)
    expected = expected or recorded_digests(folder)
    if not expected:
        return
    for name, want in sorted(expected.items()):
        path = folder / name
        try:
            stat = path.stat()
        except OSError:
            raise DamagedModelError(f"weight file {path} is missing; {REBUILD_HINT}") from None
        if stat.st_size != want.get("size"):
            raise DamagedModelError(
                f"weight file {path} is damaged ({stat.st_size} bytes, {want.get('size')} "
                f"recorded); {REBUILD_HINT}"
            )
        key = (str(path.resolve()), str(want.get("sha256")), stat.st_size, stat.st_mtime_ns)
        with _verified_lock:
            if key in _verified:
                continue
        if sha256_file(path) != want.get("sha256"):
            raise DamagedModelError(
                f"weight file {path} is damaged (its sha256 differs from the one recorded "
                f"when it was saved); {REBUILD_HINT}"
            )
        with _verified_lock:
            _verified.add(key)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def load_model(source: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a hub id or a local folder (safetensors only).
    Strict: a weight the config expects that the file lacks, or one it does not expect, is an
    error (a config.json with another layer count must not load with a layer dropped)."""
    local = Path(source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        if (Path(source) / ADAPTER_CONFIG).exists():
            model = load_adapter_model(source)
        else:
            model, info = AutoModelForCausalLM.from_pretrained(
                str(source), use_safetensors=True, output_loading_info=True
            )
            _check_loading_info(source, info)
    except DamagedModelError:
        raise
    except (OSError, ValueError) as exc:
        if local:
            raise DamagedModelError(
                f"cannot load the model in {source}: {_first_line(exc)}; {REBUILD_HINT}"
            ) from None
        raise SettingError(
            "base_model",
            f"{str(source)!r} cannot be loaded: {_first_line(exc)} "
            "(no network? use scratch:tiny or a local model folder)",
        ) from None
    except Exception as exc:  # safetensors' own errors, a shape that does not fit the config
        if not local:
            raise
        raise DamagedModelError(
            f"cannot load the model in {source}: {_first_line(exc)}; {REBUILD_HINT}"
        ) from None
    # GPT-2 configs name no loss; say which, instead of a warning on every first step.
    model.loss_type = "ForCausalLM"
    fit_tokenizer_to_model(tokenizer, model)  # folders saved before it was fitted at save
    if tokenizer.pad_token is None:  # GPT-2 ships without one; pads never reach the loss
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    return model, tokenizer


def _check_loading_info(source: str | Path, info: dict[str, Any]) -> None:
    problems = []
    for key, what in (
        ("missing_keys", "missing from the weights"),
        ("unexpected_keys", "not in the config"),
        ("mismatched_keys", "of another shape than the config's"),
    ):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            problems.append(f"{len(names)} weights {what} ({shown})")
    if problems:
        raise DamagedModelError(
            f"the weights in {source} do not fit its config.json: {'; '.join(problems)}; "
            f"{REBUILD_HINT}"
        )


def load_adapter_model(source: str | Path) -> PreTrainedModel:
    """A LoRA child: its base (named in the adapter config) with the adapter merged in, so it
    generates and serves exactly like a full child."""
    from peft import AutoPeftModelForCausalLM  # seconds to import: LoRA children only

    return AutoPeftModelForCausalLM.from_pretrained(str(source)).merge_and_unload()


def model_context(model: PreTrainedModel) -> int | None:
    """How many positions the model has (`n_positions` in GPT-2's config)."""
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def fit_tokenizer_to_model(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """Make the tokenizer's `model_max_length` the model's context. A tokenizer built in
    code says 1e30, so truncation and the stock text-generation pipeline's
    `handle_long_generation="hole"` would never cut, and a long generation dies on an
    IndexError in the position embeddings."""
    if context := model_context(model):
        tokenizer.model_max_length = context


def build_scratch_model(
    base_model: str, texts: Iterable[str], out_dir: Path, seed: int = 0
) -> Path:
    """Train a tokenizer on `texts`, build a randomly initialised GPT-2 of the preset's shape,
    and save both as a Hugging Face folder that training stages start from."""
    preset = scratch_preset(base_model)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=preset["vocab_size"])
    config = GPT2Config(
        **{**preset, "vocab_size": len(tokenizer)},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    write_model_folder(model, tokenizer, out_dir)
    return out_dir


def write_model_folder(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    *,
    generation_config: GenerationConfig | None = None,
    extras: Callable[[Path], None] | None = None,
) -> Path:
    """The one writer of model folders (trained, started, merged): the model (safetensors),
    its tokenizer (its length the model's context), its generation settings (default: the
    verse defaults) and whatever `extras(folder)` adds beside them (a card, a loss history),
    written whole: into a temporary folder, then renamed into place."""
    fit_tokenizer_to_model(tokenizer, model)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)  # safetensors is the only format transformers 5 writes
        tokenizer.save_pretrained(tmp)
        (generation_config or default_generation_config(tokenizer)).save_pretrained(tmp)
        if extras is not None:
            extras(tmp)
    return Path(out_dir)


def control_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids of the control tokens `tokenizer` holds (the conditional model's), else []."""
    vocab = tokenizer.get_vocab()
    return [vocab[token] for token in CONTROL_TOKENS if token in vocab]


def default_generation_config(tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """Sampling defaults for verse (models/config.py's). The pad token
    never appears in a loss target, so nothing teaches a model not to sample it: suppress it.
    The conditional model's control tokens only ever start a poem: suppressed too."""
    pad_is_own_token = tokenizer.pad_token_id not in (None, tokenizer.eos_token_id)
    suppress = [tokenizer.pad_token_id] if pad_is_own_token else []
    suppress += control_token_ids(tokenizer)
    return GenerationConfig(
        do_sample=True,
        temperature=TEMPERATURE,
        top_k=TOP_K,
        top_p=TOP_P,
        no_repeat_ngram_size=NO_REPEAT_NGRAM_SIZE,
        max_new_tokens=MAX_NEW_TOKENS,
        suppress_tokens=suppress or None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
