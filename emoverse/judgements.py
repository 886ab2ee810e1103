"""Human judging: readers guess the emotion of a poem a champion wrote, blind; the answers
measure whether the emotion reaches a person, not only a lexicon.

One sqlite file under the data dir (`RunPaths.judgements`), in WAL mode: each answer is one
transaction, so concurrent readers and writers never block each other for long and a crash
loses at most the answer being written, never an earlier one.

The figure counts people, not posts (`ReaderRules`, `ReaderTokens`, `check_limits`): each
reader holds a token the server signed, every answer records its reader and client address,
a reader and an address may answer only so many poems an hour, an address may only start so
many readers an hour, and an answer sooner than the poem can be read is refused. The number
of readers is shown beside every accuracy, and `discard_reader` takes one reader's answers
back out (`emoverse judgements --discard-reader`).
"""

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections import deque
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
# Added later: a store from before them gains them on its next write.
_COLUMNS = {"reader": "TEXT NOT NULL DEFAULT ''", "address": "TEXT NOT NULL DEFAULT ''"}
HOUR_MS = 3_600_000


class JudgementRefused(EmoverseError):
    """An answer the rules do not count: `status` is the HTTP status to answer with (429: a
    limit, with `retry_after_s`; 422: too soon, or another reader's poem)."""

    def __init__(self, message: str, status: int = 429, retry_after_s: int = 60):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class ReaderRules:
    """How much one person can weigh: answers per reader and per client address an hour, new
    readers per address an hour, and the least time an answer may come after its poem (a
    person reads at most about `words_per_s` words a second, after `min_read_s`)."""

    per_reader_per_hour: int = 60
    per_address_per_hour: int = 120
    new_readers_per_address_per_hour: int = 10
    min_read_s: float = 2.0
    words_per_s: float = 10.0

    def read_time_s(self, poem: str) -> float:
        """The least time a person needs to read `poem` and answer (0: not checked)."""
        if self.min_read_s <= 0:
            return 0.0
        return self.min_read_s + len(poem.split()) / self.words_per_s


class ReaderTokens:
    """Reader tokens: `<id>.<signature>`, signed with a secret the server makes when it
    starts (a restart hands out new ones; stored answers keep their reader ids). New tokens
    per client address are limited, so a client cannot be a crowd."""

    def __init__(self, rules: ReaderRules, secret: bytes | None = None):
        self.rules = rules
        self._secret = secret or secrets.token_bytes(32)
        self._issued: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _sign(self, reader: str) -> str:
        return hmac.new(self._secret, reader.encode(), hashlib.sha256).hexdigest()[:24]

    def issue(self, address: str, now: float | None = None) -> str:
        """A new reader's token, unless `address` has started too many readers this hour."""
        now = time.time() if now is None else now
        with self._lock:
            issued = self._issued.setdefault(address, deque())
            while issued and issued[0] < now - 3600:
                issued.popleft()
            if len(issued) >= self.rules.new_readers_per_address_per_hour:
                wait = int(issued[0] + 3600 - now) + 1
                raise JudgementRefused(
                    f"too many new readers from {address} this hour "
                    f"({self.rules.new_readers_per_address_per_hour}); keep your reader token, "
                    f"or come back in {wait} s",
                    retry_after_s=wait,
                )
            issued.append(now)
        reader = secrets.token_urlsafe(12)
        return f"{reader}.{self._sign(reader)}"

    def reader(self, token: str | None) -> str | None:
        """The reader id of a token this server signed, else None."""
        if not token or token.count(".") != 1:
            return None
        reader, signature = token.split(".")
        return reader if hmac.compare_digest(signature, self._sign(reader)) else None


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
                    have = self._columns(connection)
                    for name, kind in _COLUMNS.items():
                        if name not in have:
                            connection.execute(f"ALTER TABLE judgements ADD COLUMN {name} {kind}")
                yield connection
            except sqlite3.DatabaseError as exc:
                raise EmoverseError(
                    f"the judgements database {self.path} is damaged ({exc}); move it aside "
                    "to start a new one"
                ) from None

    def add(self, judgement: Judgement, reader: str = "", address: str = "") -> int:
        """Record one answer (by `reader`, from client `address`) in its own transaction;
        returns its id."""
        check_label(judgement.emotion)
        check_label(judgement.guess)
        with self._connect(write=True) as db:
            cursor = db.execute(
                "INSERT INTO judgements (created_ms, emotion, version, guess, poem, reader, "
                "address) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    int(time.time() * 1000),
                    judgement.emotion,
                    int(judgement.version),
                    judgement.guess,
                    judgement.poem,
                    reader,
                    address,
                ),
            )
            return int(cursor.lastrowid or 0)

    def recent(self, *, reader: str | None = None, address: str | None = None) -> int:
        """Answers in the last hour by `reader` (or from `address`)."""
        if not self.path.is_file():
            return 0
        column, value = ("reader", reader) if reader is not None else ("address", address)
        since = int(time.time() * 1000) - HOUR_MS
        with self._connect(write=False) as db:
            if column not in self._columns(db):
                return 0
            row = db.execute(
                f"SELECT COUNT(*) FROM judgements WHERE {column} = ? AND created_ms > ?",
                (value, since),
            ).fetchone()
        return int(row[0])

    def readers(self) -> dict[tuple[str, int], int]:
        """(emotion, version) -> how many readers answered (answers from before readers
        were recorded count as one reader each)."""
        if not self.path.is_file():
            return {}
        with self._connect(write=False) as db:
            if "reader" not in self._columns(db):
                who = "id"
            else:
                who = "CASE WHEN reader = '' THEN 'row' || id ELSE reader END"
            rows = db.execute(
                f"SELECT emotion, version, COUNT(DISTINCT {who}) FROM judgements "
                "GROUP BY emotion, version"
            ).fetchall()
        return {(e, int(v)): int(n) for e, v, n in rows}

    def reader_summary(self) -> list[dict[str, object]]:
        """Each reader's answers: {reader, answers, right, addresses, first_ms, last_ms},
        most answers first."""
        if not self.path.is_file():
            return []
        with self._connect(write=False) as db:
            if "reader" not in self._columns(db):
                return []
            rows = db.execute(
                "SELECT reader, COUNT(*), SUM(guess = emotion), COUNT(DISTINCT address), "
                "MIN(created_ms), MAX(created_ms) FROM judgements WHERE reader != '' "
                "GROUP BY reader ORDER BY COUNT(*) DESC"
            ).fetchall()
        keys = ("reader", "answers", "right", "addresses", "first_ms", "last_ms")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def discard_reader(self, reader: str) -> list[tuple[str, int]]:
        """Delete every answer of `reader` in one transaction; returns the (emotion,
        version) pairs whose figures changed."""
        if not self.path.is_file():
            return []
        with self._connect(write=True) as db:
            db.execute("BEGIN IMMEDIATE")
            touched = db.execute(
                "SELECT DISTINCT emotion, version FROM judgements WHERE reader = ?", (reader,)
            ).fetchall()
            db.execute("DELETE FROM judgements WHERE reader = ?", (reader,))
            db.execute("COMMIT")
        return [(e, int(v)) for e, v in touched]

    @staticmethod
    def _columns(db: sqlite3.Connection) -> set[str]:
        return {row[1] for row in db.execute("PRAGMA table_info(judgements)")}

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


def accuracy_or_warning(
    store: JudgementStore,
) -> tuple[dict[tuple[str, int], Share], dict[tuple[str, int], int], str | None]:
    """Readers' accuracy and number of readers per (emotion, version), or nothing and a
    warning when the store cannot be read: a damaged judgements file must not take the
    model listing down with it."""
    try:
        return store.accuracy(), store.readers(), None
    except EmoverseError as exc:
        return {}, {}, f"{exc}; readers' accuracy left out"


def check_limits(store: JudgementStore, rules: ReaderRules, reader: str, address: str) -> None:
    """Refuse an answer past a reader's or an address's hourly limit (JudgementRefused)."""
    if store.recent(reader=reader) >= rules.per_reader_per_hour:
        raise JudgementRefused(
            f"this reader has answered {rules.per_reader_per_hour} poems this hour, the most "
            "one reader may; thank you, and come back later"
        )
    if store.recent(address=address) >= rules.per_address_per_hour:
        raise JudgementRefused(
            f"{rules.per_address_per_hour} answers came from {address} this hour, the most "
            "one address may; come back later"
        )


def check_reading_time(rules: ReaderRules, poem: str, seconds: float) -> None:
    """Refuse an answer that came sooner than a person could read the poem."""
    need = rules.read_time_s(poem)
    if seconds < need:
        raise JudgementRefused(
            f"answered {seconds:.1f} s after the poem was handed out; reading it takes at "
            f"least {need:.1f} s: read it, then answer",
            status=422,
            retry_after_s=int(need - seconds) + 1,
        )
