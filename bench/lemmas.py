"""Which lemmatizer for `emoverse tag --lemmatize`: candidates whose data ships on PyPI,
compared on every token of the shared mirror.

    .venv/bin/python bench/lemmas.py [--mirror-dir ../shared/gutenberg] [--sample 30]

NRCLex's own `load_raw_text` looks words up by their WordNet noun lemma, but WordNet's data is
an NLTK download. The candidates (each skipped, and said so, when it is not installed):

* `lemminflect` (a project dependency): `getLemma(word, upos="NOUN")`;
* `simplemma` (`pip install simplemma`): dictionary lemmas of any part of speech;
* WordNet's noun morphology (`pip install spacy-lookups-data`, 99 MB): NLTK's `morphy`
  rules and exceptions over the WordNet noun index that spaCy's lookups ship, which is what
  NRCLex does with WordNet installed.

For each: how many word types (and occurrences) outside the lexicon it maps onto a lexicon
entry, how many words already in the lexicon it would look up as another entry, and a sample
of its mappings drawn by frequency (what a reader meets), printed for checking by hand.
"""

import argparse
import gzip
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.tag import DEFAULT_MIRROR, mirror_poems  # noqa: E402
from emoverse.tagging import load_lexicon, noun_lemmatizer  # noqa: E402
from emoverse.tagging.tokenize import tokenize  # noqa: E402


def _simplemma() -> Callable[[str], str]:
    import simplemma

    return lambda word: simplemma.lemmatize(word, lang="en")


def _wordnet_morphy() -> Callable[[str], str]:
    """NLTK's `WordNetLemmatizer().lemmatize(word)` (pos "n") over spaCy's WordNet tables."""
    import spacy_lookups_data

    data = Path(os.path.dirname(spacy_lookups_data.__file__)) / "data"

    def load(name: str) -> dict:
        with gzip.open(data / f"en_lemma_{name}.json.gz") as handle:
            return json.load(handle)["noun"]

    index, exceptions, rules = set(load("index")), load("exc"), load("rules")

    def morphy(word: str) -> str:
        if word in exceptions:
            forms = [word, *exceptions[word]]
        else:
            forms = [word] + [word[: -len(old)] + new for old, new in rules if word.endswith(old)]
        found = [f for f in dict.fromkeys(forms) if f in index]
        return min(found, key=len) if found else word

    return morphy


CANDIDATES: dict[str, Callable[[], Callable[[str], str]]] = {
    "lemminflect (noun)": noun_lemmatizer,
    "simplemma": _simplemma,
    "wordnet morphy (noun)": _wordnet_morphy,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror-dir", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument("--sample", type=int, default=30)
    args = parser.parse_args()

    counter: Counter[str] = Counter()
    for text in mirror_poems(args.mirror_dir).column("text").to_pylist():
        counter.update(tokenize(text))
    lexicon = load_lexicon().index
    print(f"{sum(counter.values()):,} tokens, {len(counter):,} word types in the mirror's poems")
    print()
    print("| lemmatizer | types newly in the lexicon | occurrences | known words remapped |")
    print("|---|---:|---:|---:|")
    samples = {}
    for name, make in CANDIDATES.items():
        try:
            lemma = make()
        except ImportError:
            print(f"| {name} | not installed | | |")
            continue
        lemmas = {word: lemma(word) for word in counter}
        mapped = {w: m for w, m in lemmas.items() if w not in lexicon and m != w and m in lexicon}
        remapped = sum(1 for w, m in lemmas.items() if w in lexicon and m != w and m in lexicon)
        occurrences = sum(counter[w] for w in mapped)
        print(f"| {name} | {len(mapped):,} | {occurrences:,} | {remapped:,} |")
        words = sorted(mapped)
        rng = random.Random(1)
        drawn = rng.choices(words, weights=[counter[w] for w in words], k=args.sample)
        samples[name] = [f"{w}->{mapped[w]}" for w in dict.fromkeys(drawn)]
    for name, pairs in samples.items():
        print(f"\nsample of {name} (by frequency, {len(pairs)} distinct): {', '.join(pairs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
