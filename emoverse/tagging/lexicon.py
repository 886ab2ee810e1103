"""The lexicons a poem is counted with (NRC, Empath) and the noun lemmatizer."""


import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from emoverse.emotions import EMOTIONS
from emoverse.errors import EmoverseError
from emoverse.schema import COUNT_COLUMNS

TOKENS_SURFACE = "surface"
TOKENS_LEMMAS = "lemminflect-noun-lemmas"




@dataclass(frozen=True)
class Lexicon:
    """The NRC lexicon file that nrclex ships, as a word -> row index and a (words x 10)
    0/1 matrix in COUNT_COLUMNS order."""

    path: str
    sha256: str
    index: dict[str, int] = field(repr=False)
    matrix: np.ndarray = field(repr=False)


# The lexicons a poem can be judged by: `nrc`, what the partitions are tagged with, and
# `empath`, the eight Plutchik categories of Empath (Fast et al., 2016), built from fiction
# with word embeddings and crowd checks, independently of the NRC lexicon: a second judge of
# generated poems that the models were not trained to please.
LEXICONS = ("nrc", "empath")


@lru_cache(maxsize=2)
def load_lexicon(name: str = "nrc") -> Lexicon:
    """A lexicon as a word -> row index and a (words x 10) matrix in COUNT_COLUMNS order
    (Empath has no polarity: its last two columns are zero)."""
    if name == "nrc":
        source = resources.files("nrclex.data").joinpath("nrc_en.json")
        raw = source.read_bytes()
        entries: dict[str, list[str]] = json.loads(raw)
    elif name == "empath":
        source = resources.files("empath").joinpath("data", "categories.tsv")
        raw = source.read_bytes()
        entries = {}
        for line in raw.decode("utf-8").splitlines():
            category, *terms = line.split("\t")
            if category in EMOTIONS:
                for term in dict.fromkeys(terms):  # Empath counts a term once per category
                    entries.setdefault(term, []).append(category)
    else:
        raise EmoverseError(f"unknown lexicon {name!r}; valid: {', '.join(LEXICONS)}")
    column = {name: j for j, name in enumerate(COUNT_COLUMNS)}
    matrix = np.zeros((len(entries), len(COUNT_COLUMNS)), dtype=np.int32)
    index: dict[str, int] = {}
    for row, (word, affects) in enumerate(entries.items()):
        index[word] = row
        for affect in affects:  # NRCLex counts every listed affect once per token
            matrix[row, column[affect]] += 1
    return Lexicon(str(source), hashlib.sha256(raw).hexdigest(), index, matrix)


@lru_cache(maxsize=1)
def noun_lemmatizer() -> Callable[[str], str]:
    """A word's noun lemma by lemminflect (its dictionary and rules ship in the wheel, so it
    runs offline, unlike NLTK's WordNet data). Chosen over simplemma and WordNet's morphy
    rules by `bench/lemmas.py`: see bench/RESULTS.md."""
    from lemminflect import getLemma

    def lemma(word: str) -> str:
        found = getLemma(word, upos="NOUN")
        return found[0] if found else word

    return lemma


