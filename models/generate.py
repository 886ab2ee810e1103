"""Sampling poems from a saved model folder."""

from pathlib import Path

import torch

from models.modeling import load_model


def generate_poems(
    model_dir: str | Path,
    *,
    prompt: str = "",
    n: int = 1,
    seed: int = 0,
    max_new_tokens: int = 120,
    min_new_tokens: int = 8,
) -> list[str]:
    """`n` poems starting with `prompt`, sampled with the folder's generation config.
    The same seed gives the same poems; none ends before `min_new_tokens`, so an undertrained
    model cannot answer with an empty poem."""
    model, tokenizer = load_model(model_dir)
    # Poems were trained as `bos + text + eos`, so a bos starts a fresh poem.
    ids = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    input_ids = torch.tensor([ids], dtype=torch.long)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            num_return_sequences=n,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min(min_new_tokens, max_new_tokens),
        )
    return [tokenizer.decode(seq[1:], skip_special_tokens=True).strip() for seq in out]
