"""Tag poems with NRC Emotion Lexicon counts and write the nine label partitions, versioned.

Semantics:

* Tokens: `emoverse.tagging.tokenize` (lowercased words as TextBlob's `words` gives them: NLTK's
  word tokenizer, punctuation stripped, line by line; no NLTK data needed). NRCLex's lookup
  is case-sensitive, so a capitalised line-initial "Death" counts only because we lowercase.
* Counts: the ten raw counts (eight emotions, positive, negative) equal
  `NRCLex().load_token_list(tokens).raw_emotion_scores` over the lexicon file that the nrclex
  package ships; here they come from a (words x 10) matrix of that file, summed per poem.
* Label: the emotion of the eight with strictly the highest count; `neutral` when there are
  no hits or a tie at the top. `min_hits` (the top count must reach it) and `min_margin` (the
  top count must beat the runner-up by it) tighten the rule; their defaults, 1 and 1, are
  the rule itself.
* Optional noun lemmatization (`lemmatize`; lemminflect, whose data ships on PyPI): the
  lexicon is looked up by each token's noun lemma ("tears" as "tear"), as NRCLex's own
  `load_raw_text` does with WordNet; tokens and `n_tokens` stay surface forms.
* Optional negation (`negation`): a hit preceded within three tokens on its line by a negator
  ("not happy") does not count. Off by default, like lemmas: the default is NRCLex's counts.
* Split: train/validation/test from a hash of `poem_id`, 90/5/5, stable across runs.

The modules, in the order the stage uses them: `tokenize` (words as TextBlob gives them),
`lexicon` (NRC, Empath, lemmas), `counting` (the ten counts, vectorised), `rule` (labels,
splits, judge agreement), `store` (versioned partitions), `stage` (`tag_poems`, its
"already done?" key, the report).
"""

from emoverse.tagging.counting import (
    NEGATORS,
    TAGGER_VERSION,
    Tagger,
    count_emotions,
    count_texts,
)
from emoverse.tagging.lexicon import LEXICONS, Lexicon, load_lexicon, noun_lemmatizer
from emoverse.tagging.rule import (
    SPLITS,
    judge_agreement,
    label_agreement,
    label_for,
    label_texts,
    labels_for,
    split_for,
    tag_table,
)
from emoverse.tagging.stage import TagResult, label_changes, tag_poems, tag_report
from emoverse.tagging.store import (
    DATA_FOLDER,
    KEEP_VERSIONS,
    MANIFEST_NAME,
    label_files,
    list_versions,
    read_manifest,
    read_partition,
    read_partitions,
    versions_dir,
    write_partitions,
    write_version,
)

__all__ = [
    "DATA_FOLDER",
    "KEEP_VERSIONS",
    "LEXICONS",
    "MANIFEST_NAME",
    "NEGATORS",
    "SPLITS",
    "TAGGER_VERSION",
    "Lexicon",
    "TagResult",
    "Tagger",
    "count_emotions",
    "count_texts",
    "judge_agreement",
    "label_agreement",
    "label_changes",
    "label_files",
    "label_for",
    "label_texts",
    "labels_for",
    "list_versions",
    "load_lexicon",
    "noun_lemmatizer",
    "read_manifest",
    "read_partition",
    "read_partitions",
    "split_for",
    "tag_poems",
    "tag_report",
    "tag_table",
    "versions_dir",
    "write_partitions",
    "write_version",
]
