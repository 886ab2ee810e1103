"""NADE (Hotz-Behofsits et al., `nade` on PyPI, MIT): eight Plutchik intensities (0 to 1) per
text from a fastText emoji classifier and one LightGBM regressor per emotion, all shipped in
the wheel, so it runs offline. It reads the whole text, not lexicon hits.

* Loading: `nade.Nade()` unpacks its gzipped regressors into its own package folder on first
  use, which fails on a read-only install (a system site-packages, a container image). Here
  the regressors are read from the `.gz` files straight into memory (`lightgbm.Booster(
  model_str=...)`): nothing is written anywhere, and the unpacked `.txt` files are not needed.
  Prediction is the package's own `Nade.predict`, on an instance built by `load_nade`.
* Intensities: `intensities(texts)` is an [n, 8] array in EMOTIONS order (NADE's order too).
* Label rule: NADE's raw intensities carry a prior: trust or anticipation is the highest for
  84% of the mirror's real poems (43% and 41%), so the arg-max names the model's taste, not
  the poem. A poem's label is the emotion whose intensity stands highest
  above its level in real verse, in standard deviations (`REFERENCE_MEAN`, `REFERENCE_STD`:
  NADE over the 24,391 poems of the shared Gutenberg mirror, `bench/calibrate_judges.py
  --reference`), when that is at least `MIN_Z`; `neutral` otherwise. On the mirror this
  spreads the labels over all eight emotions (7.5% to 11.9% each) and leaves 29% neutral,
  near NRC's own share of neutral poems.
* Valence: the mean standardised intensity of joy and trust against that of anger, disgust,
  fear and sadness (Plutchik's positive and negative basic emotions; anticipation and surprise
  have no sign); `positive` or `negative` when one beats the other by `VALENCE_MARGIN`, else
  `none`. The margin was chosen on the calibration's train verses (bench/RESULTS.md).
"""

import gzip
import json
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from emoverse.emotions import EMOTIONS, LABELS, NEUTRAL

MODEL = "socialmedia_en"  # the one model the wheel ships
# NADE's intensities over every poem of the shared mirror (24,391 poems, nade 0.3.1), in
# EMOTIONS order: the level each emotion has in real verse.
REFERENCE_MEAN = np.array([0.0917, 0.2400, 0.1356, 0.0746, 0.1878, 0.0592, 0.1691, 0.2477])
REFERENCE_STD = np.array([0.0514, 0.0729, 0.0708, 0.0355, 0.0448, 0.0499, 0.0798, 0.0801])
MIN_Z = 1.0  # a label needs an emotion one standard deviation above its level in real verse
VALENCE_MARGIN = 0.5  # standard deviations between the positive and the negative means
POSITIVE = ("joy", "trust")
NEGATIVE = ("anger", "disgust", "fear", "sadness")


def data_dir() -> Path:
    """The folder of the installed wheel's model files (read, never written)."""
    return Path(str(resources.files("nade").joinpath("data", MODEL)))


@lru_cache(maxsize=2)
def load_nade(folder: Path | None = None) -> Any:
    """A `nade.Nade` loaded from `folder` (default: the installed wheel's) without writing
    anything: the regressors come from their `.gz` files into memory. One per process."""
    import fasttext
    import lightgbm
    from nade import Nade

    folder = Path(folder) if folder is not None else data_dir()
    model = Nade.__new__(Nade)  # its __init__ would unpack into the package folder
    model.model_paths = {"base": str(folder)}
    model.emojis = {}
    with open(folder / "emoji_frequencies.jsonl", encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            model.emojis[entry["emoji"]] = entry["hash"]
    model.max_k = len(model.emojis)
    model.tm = fasttext.load_model(str(folder / "nade_250k_hp.ftz"))
    model.labels = list(EMOTIONS)
    model.gb_reg = {}
    for emotion in EMOTIONS:
        with gzip.open(folder / f"reg_{emotion}.txt.gz", "rt", encoding="utf-8") as f:
            model.gb_reg[emotion] = lightgbm.Booster(model_str=f.read())
    model.elookup = {v: k for k, v in model.emojis.items()}
    return model


def intensities(texts: Sequence[str], folder: Path | None = None) -> np.ndarray:
    """NADE's eight intensities per text, [n, 8] in EMOTIONS order. fastText reads one line,
    so a poem's lines are joined with spaces (NADE's preprocessing collapses them anyway)."""
    if not texts:
        return np.zeros((0, len(EMOTIONS)))
    flat = [" ".join(text.split()) for text in texts]
    predicted = load_nade(folder).predict(flat)
    return np.array([predicted[e].to_pylist() for e in EMOTIONS], dtype=float).T


def standardised(scores: np.ndarray) -> np.ndarray:
    """Intensities in standard deviations above their level in real verse."""
    return (scores - REFERENCE_MEAN) / REFERENCE_STD


def labels_of(scores: np.ndarray, min_z: float = MIN_Z) -> list[str]:
    """The label rule (module docstring) over [n, 8] intensities."""
    z = standardised(scores)
    return (
        [EMOTIONS[int(row.argmax())] if row.max() >= min_z else NEUTRAL for row in z]
        if len(z)
        else []
    )


def valence_scores(scores: np.ndarray) -> np.ndarray:
    """Mean standardised positive minus mean standardised negative intensity, per text."""
    z = standardised(scores)
    pos = z[:, [EMOTIONS.index(e) for e in POSITIVE]].mean(axis=1)
    neg = z[:, [EMOTIONS.index(e) for e in NEGATIVE]].mean(axis=1)
    return pos - neg


def valences_of(scores: np.ndarray, margin: float = VALENCE_MARGIN) -> list[str]:
    return [
        "positive" if d >= margin else "negative" if d <= -margin else "none"
        for d in valence_scores(scores)
    ]


assert set(LABELS) == {*EMOTIONS, NEUTRAL}
