"""Human judging: readers guess the emotion of a poem a champion wrote, blind; the answers
measure whether the emotion reaches a person, not only a lexicon.

One sqlite file under the data dir (`RunPaths.judgements`), in WAL mode: each answer is one
transaction, so concurrent readers and writers never block each other for long and a crash
loses at most the answer being written, never an earlier one.
"""

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from emoverse.emotions import LABELS, check_label
from emoverse.errors import EmoverseError
from emoverse.stats import Share

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms INTEGER NOT NULL,
    emotion TEXT NOT NULL,      -- what the model was trained for (hidden from the reader)
    version INTEGER NOT NULL,   -- the registry version that wrote the poem
    guess TEXT NOT NULL,        -- the reader's label
    poem TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS judgements_by_model ON judgements (emotion, version);
"""


@dataclass(frozen=True)
class Judgement:
    emotion: str
    version: int
    guess: str
    poem: str


class JudgementStore:
    """Readers' answers, one row each. Reading a store that does not exist yet creates
    nothing: it has no answers."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise EmoverseError(f"cannot open the judgements database {self.path}: {exc}") from None
        with closing(connection):
            try:
                if write:
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.executescript(_SCHEMA)
                yield connection
            except sqlite3.DatabaseError as exc:
                raise EmoverseError(
                    f"the judgements database {self.path} is damaged ({exc}); move it aside "
                    "to start a new one"
                ) from None

    def add(self, judgement: Judgement) -> int:
        """Record one answer in its own transaction; returns its id."""
        check_label(judgement.emotion)
        check_label(judgement.guess)
        with self._connect(write=True) as db:
            cursor = db.execute(
                "INSERT INTO judgements (created_ms, emotion, version, guess, poem) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    int(time.time() * 1000),
                    judgement.emotion,
                    int(judgement.version),
                    judgement.guess,
                    judgement.poem,
                ),
            )
            return int(cursor.lastrowid or 0)

    def accuracy(self) -> dict[tuple[str, int], Share]:
        """(emotion, version) -> the share of readers who named the model's emotion."""
        if not self.path.is_file():
            return {}
        with self._connect(write=False) as db:
            rows = db.execute(
                "SELECT emotion, version, SUM(guess = emotion), COUNT(*) FROM judgements "
                "GROUP BY emotion, version"
            ).fetchall()
        return {(e, int(v)): Share.of(int(k), int(n)) for e, v, k, n in rows}

    def confusion(self) -> dict[str, dict[str, int]]:
        """emotion -> guess -> answers, over every version."""
        table = {emotion: dict.fromkeys(LABELS, 0) for emotion in LABELS}
        if not self.path.is_file():
            return table
        with self._connect(write=False) as db:
            for emotion, guess, n in db.execute(
                "SELECT emotion, guess, COUNT(*) FROM judgements GROUP BY emotion, guess"
            ):
                table[emotion][guess] = int(n)
        return table
