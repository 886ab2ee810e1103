"""Where a training stage's starting model comes from: a Hugging Face id or folder, or a
GPT-2 configuration built from scratch with a tokenizer trained on the corpus."""

from collections.abc import Iterable
from pathlib import Path

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

from emoverse.atomic import atomic_path
from emoverse.errors import EmoverseError
from models.config import scratch_preset
from models.tokenizer import train_bpe_tokenizer

ADAPTER_CONFIG = "adapter_config.json"  # what PEFT writes beside an adapter's weights

# Weight-loading bars would interleave with our own training bars.
hf_logging.disable_progress_bar()


def load_model(source: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a hub id or a local folder (safetensors only)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        if (Path(source) / ADAPTER_CONFIG).exists():
            model = load_adapter_model(source)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(source), use_safetensors=True)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EmoverseError(
            f"cannot load base model {str(source)!r}: {first_line} "
            "(no network? use --base-model scratch:tiny or a local folder)"
        ) from None
    # GPT-2 configs name no loss; say which, instead of a warning on every first step.
    model.loss_type = "ForCausalLM"
    if tokenizer.pad_token is None:  # GPT-2 ships without one; pads never reach the loss
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    return model, tokenizer


def load_adapter_model(source: str | Path) -> PreTrainedModel:
    """A LoRA child: its base (named in the adapter config) with the adapter merged in, so it
    generates and serves exactly like a full child."""
    from peft import AutoPeftModelForCausalLM

    return AutoPeftModelForCausalLM.from_pretrained(str(source)).merge_and_unload()


def build_scratch_model(
    base_model: str, texts: Iterable[str], out_dir: Path, seed: int = 0
) -> Path:
    """Train a tokenizer on `texts`, build a randomly initialised GPT-2 of the preset's shape,
    and save both as a Hugging Face folder that training stages start from."""
    import torch

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
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        default_generation_config(tokenizer).save_pretrained(tmp)
    return out_dir


def default_generation_config(tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """Sampling defaults for verse: nucleus sampling with no 3-gram repeats. The pad token
    never appears in a loss target, so nothing teaches a model not to sample it: suppress it."""
    pad_is_own_token = tokenizer.pad_token_id not in (None, tokenizer.eos_token_id)
    return GenerationConfig(
        do_sample=True,
        temperature=0.9,
        top_k=50,
        top_p=0.95,
        no_repeat_ngram_size=3,
        max_new_tokens=120,
        suppress_tokens=[tokenizer.pad_token_id] if pad_is_own_token else None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
