"""A byte-level BPE tokenizer trained on the corpus, for models trained from scratch."""

from collections.abc import Iterable

from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast

# GPT-2's convention: one token marks both the start and the end of a document.
BOUNDARY_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (the GPT-2 scheme: no unknown tokens) on `texts`."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[BOUNDARY_TOKEN, PAD_TOKEN],
        show_progress=False,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=BOUNDARY_TOKEN,
        eos_token=BOUNDARY_TOKEN,
        pad_token=PAD_TOKEN,
    )
