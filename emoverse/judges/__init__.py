"""The judges of a poem's emotion, behind one small interface: each gives, per text, a label
(one of the nine), eight scores (EMOTIONS order) and a valence (`positive`, `negative`,
`none`).

* `nrc`: the NRC Emotion Lexicon, the lexicon the partitions are tagged with (so the one the
  children were trained to please). Scores: hit counts; label: the tagging rule
  (`emoverse.tagging.label_for`, with the partitions' options); valence: NRC's own
  `positive` against `negative` counts, `none` on a tie (no hits included).
* `empath`: Empath's eight Plutchik categories (an independent lexicon). Scores: hit counts;
  label: the same rule; valence: joy + trust hits against anger + disgust + fear + sadness
  hits (Plutchik's signed emotions; anticipation and surprise have none), `none` on a tie.
* `nade`: NADE, a fastText + gradient-boosting model that reads the whole text
  (`emoverse.judges.nade`: loading without writing, its label and valence rules). Scores:
  intensities 0 to 1.

`judge_texts(texts)` runs the judges; `Judged` is one judge's answer for a batch.
`calibration_table()`: how far each judge's valence agrees with people on human-labelled
verse (`calibration.json`, written by `bench/calibrate_judges.py --write`).
`agreement_with_nrc`: how often a judge gives real poems their NRC label.
Pure Python over the stock packages; nothing here knows of models or Prefect.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emoverse.emotions import EMOTIONS
from emoverse.errors import EmoverseError
from emoverse.judges import nade

JUDGES: tuple[str, ...] = ("nrc", "empath", "nade")
LEXICAL = ("nrc", "empath")
VALENCES: tuple[str, ...] = ("positive", "negative", "none")
# Empath's signed categories (its polarity columns are empty).
POSITIVE = ("joy", "trust")
NEGATIVE = ("anger", "disgust", "fear", "sadness")
CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
# What a judge's scores are, for people.
SCORE_KINDS = {"nrc": "lexicon hits", "empath": "lexicon hits", "nade": "intensity 0-1"}


@dataclass(frozen=True)
class Judged:
    """One judge over n texts: labels, [n, 8] scores (EMOTIONS order), valences."""

    judge: str
    labels: list[str]
    scores: np.ndarray
    valences: list[str]

    def row(self, i: int) -> dict[str, Any]:
        """Text i as JSON: {label, scores: {emotion: score}, valence}."""
        values = self.scores[i]
        as_number = float if self.judge == "nade" else int
        return {
            "label": self.labels[i],
            "scores": {e: as_number(values[j]) for j, e in enumerate(EMOTIONS)},
            "valence": self.valences[i],
        }


def _sign(difference: float) -> str:
    return "positive" if difference > 0 else "negative" if difference < 0 else "none"


def _lexical(
    texts: Sequence[str],
    lexicon: str,
    *,
    min_hits: int = 1,
    min_margin: int = 1,
    lemmatize: bool = False,
    negation: bool = False,
) -> Judged:
    import pyarrow as pa

    from emoverse.emotions import LABELS
    from emoverse.tagging import count_texts
    from emoverse.tagging.rule import labels_for

    counts, _ = count_texts(
        pa.array(list(texts), pa.string()),
        lemmatize=lemmatize,
        negation=negation,
        lexicon=lexicon,
        workers=1,
    )
    labels = [LABELS[i] for i in labels_for(counts, min_hits, min_margin)]
    emotions = counts[:, : len(EMOTIONS)]
    from emoverse.schema import COUNT_COLUMNS

    if lexicon == "nrc":
        pos = counts[:, COUNT_COLUMNS.index("positive")]
        neg = counts[:, COUNT_COLUMNS.index("negative")]
    else:
        pos = emotions[:, [EMOTIONS.index(e) for e in POSITIVE]].sum(axis=1)
        neg = emotions[:, [EMOTIONS.index(e) for e in NEGATIVE]].sum(axis=1)
    valences = [_sign(float(d)) for d in pos.astype(int) - neg.astype(int)]
    return Judged(lexicon, labels, emotions.astype(int), valences)


def judge_texts(
    texts: Sequence[str],
    judges: Sequence[str] = JUDGES,
    *,
    rule: dict[str, Any] | None = None,
) -> dict[str, Judged]:
    """Each of `judges` over `texts`; `rule` (min_hits, min_margin, lemmatize, negation) is the
    lexicons' tagging rule (default: the tagger's defaults)."""
    unknown = [j for j in judges if j not in JUDGES]
    if unknown:
        raise EmoverseError(f"unknown judge {unknown[0]!r}; valid: {', '.join(JUDGES)}")
    out: dict[str, Judged] = {}
    for judge in judges:
        if judge == "nade":
            scores = nade.intensities(texts)
            out[judge] = Judged(judge, nade.labels_of(scores), scores, nade.valences_of(scores))
        else:
            out[judge] = _lexical(texts, judge, **(rule or {}))
    return out


def agreement_with_nrc(
    texts: Sequence[str],
    nrc_labels: Sequence[str],
    judge: str,
    *,
    sample: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """How often `judge` gives real poems the label NRC gave them
    (`emoverse.tagging.label_agreement`), on all the poems or on a seeded sample of `sample`
    of them (NADE reads a poem in milliseconds where a lexicon takes microseconds)."""
    import random

    from emoverse.tagging import label_agreement

    picked = list(range(len(texts)))
    if sample is not None and len(picked) > sample:
        picked = sorted(random.Random(seed).sample(picked, sample))
    judged = judge_texts([texts[i] for i in picked], [judge])[judge].labels
    result = label_agreement([nrc_labels[i] for i in picked], judged)
    result["of_poems"] = len(texts)
    return result


def calibration() -> dict[str, Any] | None:
    """The kept calibration figures (None when the file is missing)."""
    if not CALIBRATION_FILE.is_file():
        return None
    return json.loads(CALIBRATION_FILE.read_text(encoding="utf-8"))


def calibration_table() -> list[str]:
    """The calibration as markdown lines (a sentence and a table); [] without figures."""
    kept = calibration()
    if kept is None:
        return []

    def cell(share: dict[str, Any]) -> str:
        return f"{share['share']:.0%} [{share['low']:.0%}–{share['high']:.0%}] n={share['n']}"

    lines = [
        f"On {kept['verses']:,} verses of Gutenberg poetry labelled by people ({kept['data']}), "
        "each judge's valence (NRC: its positive against negative words; Empath: joy and trust "
        "against anger, disgust, fear and sadness words; NADE: the same emotions' intensities, "
        "standardised) against people's, on the verses they call positive or negative:",
        "",
        "| judge | decides | accuracy where it decides | right of all | none on no-impact |",
        "|---|---:|---:|---:|---:|",
    ]
    for judge, row in kept["judges"].items():
        lines.append(
            f"| {judge} | {cell(row['decides'])} | {cell(row['accuracy'])} "
            f"| {cell(row['right_of_all'])} | {cell(row['none_on_no_impact'])} |"
        )
    return lines


__all__ = [
    "CALIBRATION_FILE",
    "JUDGES",
    "LEXICAL",
    "SCORE_KINDS",
    "VALENCES",
    "Judged",
    "agreement_with_nrc",
    "calibration",
    "calibration_table",
    "judge_texts",
    "nade",
]
