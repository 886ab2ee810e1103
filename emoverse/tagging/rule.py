"""The label rule (the strict maximum of the eight emotions), the train/validation/test
split, and how the two judges agree on real poems."""


import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from emoverse.emotions import EMOTIONS, LABELS, NEUTRAL
from emoverse.errors import EmoverseError
from emoverse.schema import COUNT_COLUMNS, POEM_SCHEMA, TAGGED_SCHEMA
from emoverse.tagging.counting import count_texts

SPLITS: tuple[str, ...] = ("train", "validation", "test")


def check_rule(min_hits: int, min_margin: int) -> None:
    """Below 1, ties and poems without hits would get an emotion: refused."""
    if min_hits < 1 or min_margin < 1:
        raise EmoverseError(
            f"min_hits and min_margin must be at least 1, got {min_hits} and {min_margin}"
        )


def label_for(counts: dict[str, int], min_hits: int = 1, min_margin: int = 1) -> str:
    """The emotion with the highest count when that count is at least `min_hits` and beats
    every other emotion by at least `min_margin`; otherwise `neutral` (defaults: strictly the
    highest, and any hit)."""
    check_rule(min_hits, min_margin)
    ranked = sorted(((counts[e], e) for e in EMOTIONS), key=lambda pair: -pair[0])
    (top, emotion), (second, _) = ranked[0], ranked[1]
    return emotion if top >= min_hits and top - second >= min_margin else NEUTRAL


def labels_for(counts: np.ndarray, min_hits: int = 1, min_margin: int = 1) -> np.ndarray:
    """`label_for` over a [n, 10] count matrix: indices into LABELS."""
    check_rule(min_hits, min_margin)
    emotions = counts[:, : len(EMOTIONS)]
    if len(emotions) == 0:
        return np.zeros(0, dtype=np.int64)
    top = emotions.max(axis=1)
    second = np.partition(emotions, -2, axis=1)[:, -2]
    ok = (top >= min_hits) & (top - second >= min_margin)
    return np.where(ok, emotions.argmax(axis=1), LABELS.index(NEUTRAL))


def label_texts(
    texts: list[str],
    *,
    min_hits: int = 1,
    min_margin: int = 1,
    lemmatize: bool = False,
    negation: bool = False,
    lexicon: str = "nrc",
) -> list[str]:
    """The label of each text by the rule partitions are tagged with, judged by `lexicon`
    (in this process: meant for generated poems, not a corpus)."""
    counts, _ = count_texts(
        pa.array(texts, pa.string()),
        lemmatize=lemmatize,
        negation=negation,
        lexicon=lexicon,
        workers=1,
    )
    return [LABELS[i] for i in labels_for(counts, min_hits, min_margin)]


def label_agreement(reference: list[str], judged: list[str]) -> dict[str, Any]:
    """How often `judged` labels equal the `reference` labels of the same poems: overall, on
    poems the reference gives an emotion, per reference label (`poems`, `agrees`), the share
    the judge calls neutral, and Cohen's kappa."""
    n = len(reference)
    agree = sum(a == b for a, b in zip(reference, judged, strict=True))
    emotional = [(a, b) for a, b in zip(reference, judged, strict=True) if a != NEUTRAL]
    per_label = {}
    for label in LABELS:
        pairs = [b for a, b in zip(reference, judged, strict=True) if a == label]
        per_label[label] = {"poems": len(pairs), "agrees": sum(b == label for b in pairs)}
    # Cohen's kappa: agreement beyond what the two label distributions give by chance.
    chance = (
        sum((reference.count(label) / n) * (judged.count(label) / n) for label in LABELS)
        if n
        else 0.0
    )
    observed = agree / n if n else 0.0
    return {
        "poems": n,
        "agreement": observed,
        "agreement_on_emotional": (
            sum(a == b for a, b in emotional) / len(emotional) if emotional else 0.0
        ),
        "emotional_poems": len(emotional),
        "judged_neutral": judged.count(NEUTRAL) / n if n else 0.0,
        "kappa": (observed - chance) / (1 - chance) if chance < 1 else 0.0,
        "per_label": per_label,
    }


def judge_agreement(texts: list[str], nrc_labels: list[str]) -> dict[str, Any]:
    """How often Empath, with the default rule, gives real poems the label the NRC lexicon
    gave them (`label_agreement`, with Empath's keys named for it). The ceiling against
    which a model's Empath fidelity reads: a perfect NRC child would score about this under
    Empath."""
    counts, _ = count_texts(pa.array(texts, pa.string()), lexicon="empath")
    empath = [LABELS[i] for i in labels_for(counts)]
    result = label_agreement(nrc_labels, empath)
    result["empath_neutral"] = result.pop("judged_neutral")
    for row in result["per_label"].values():
        row["empath_agrees"] = row.pop("agrees")
    return result


def split_for(poem_id: str) -> str:
    """train/validation/test (90/5/5) from a hash of the poem id: stable across runs and
    independent of which other poems are in the corpus."""
    bucket = int.from_bytes(hashlib.sha256(poem_id.encode()).digest()[:4], "big") % 100
    return "validation" if bucket < 5 else "test" if bucket < 10 else "train"


def tag_table(
    poems: pa.Table,
    *,
    min_hits: int = 1,
    min_margin: int = 1,
    lemmatize: bool = False,
    negation: bool = False,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> pa.Table:
    """Add the ten counts, `n_tokens`, `label` and `split` to a table of poems."""
    check_rule(min_hits, min_margin)
    counts, n_tokens = count_texts(
        poems.column("text"),
        lemmatize=lemmatize,
        negation=negation,
        workers=workers,
        on_progress=on_progress,
    )
    labels = np.asarray(LABELS, dtype=object)[labels_for(counts, min_hits, min_margin)]
    columns: dict[str, Any] = {name: poems.column(name) for name in POEM_SCHEMA.names}
    for j, name in enumerate(COUNT_COLUMNS):
        columns[name] = pa.array(counts[:, j], pa.int32())
    columns["n_tokens"] = pa.array(n_tokens, pa.int32())
    columns["label"] = pa.array(labels.tolist(), pa.string())
    columns["split"] = pa.array([split_for(p) for p in poems.column("poem_id").to_pylist()])
    return pa.table(columns, schema=TAGGED_SCHEMA)


