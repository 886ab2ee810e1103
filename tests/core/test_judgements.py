"""Human judgements: one transaction per answer in a real sqlite file, concurrent writers,
accuracy with its interval, and a damaged file named in one line."""

import subprocess
import sys
from pathlib import Path

import pytest

from emoverse.errors import EmoverseError, UnknownEmotionError
from emoverse.judgements import Judgement, JudgementStore
from emoverse.stats import Share

REPO = Path(__file__).resolve().parents[2]

WRITE_MANY = """
import sys
from emoverse.judgements import Judgement, JudgementStore
store = JudgementStore(sys.argv[1])
for i in range(25):
    store.add(Judgement("joy", 3, "joy" if i % 5 else "fear", f"poem {sys.argv[2]}-{i}"))
"""


def test_accuracy_per_model_version_with_its_interval(tmp_path):
    store = JudgementStore(tmp_path / "judgements" / "judgements.db")
    assert store.accuracy() == {}  # nothing yet, and nothing created by asking
    assert not (tmp_path / "judgements").exists()
    for guess in ("joy", "joy", "fear"):
        store.add(Judgement("joy", 2, guess, "a poem"))
    store.add(Judgement("fear", 1, "neutral", "another"))
    accuracy = store.accuracy()
    assert accuracy[("joy", 2)] == Share.of(2, 3)
    assert accuracy[("fear", 1)] == Share.of(0, 1)
    assert store.confusion()["joy"]["fear"] == 1
    with pytest.raises(UnknownEmotionError):
        store.add(Judgement("joy", 2, "happy", "a poem"))


@pytest.mark.slow
def test_concurrent_writers_lose_no_answer(tmp_path):
    db = tmp_path / "judgements.db"
    JudgementStore(db).add(Judgement("joy", 3, "joy", "first"))
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITE_MANY, str(db), str(i)], cwd=REPO)
        for i in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    share = JudgementStore(db).accuracy()[("joy", 3)]
    assert share.n == 101 and share.k == 1 + 4 * 20


def test_a_damaged_database_is_named_in_one_line(tmp_path):
    db = tmp_path / "judgements.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(EmoverseError, match=r"judgements database .* is damaged"):
        JudgementStore(db).accuracy()
    with pytest.raises(EmoverseError, match="damaged"):
        JudgementStore(db).add(Judgement("joy", 1, "joy", "p"))
    assert db.read_bytes().startswith(b"this is not a database")  # left as it was
