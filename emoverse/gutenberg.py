"""Fetch Project Gutenberg books and cut them into poems (pure logic; the Prefect layer wraps it).

A mirror is either an http(s) URL with the site's layout (the public site, or a loopback server
over a local copy) or a local folder with that same layout. A book is looked for at
`cache/epub/<id>/pg<id>.txt`, then at the uploaded `files/<id>/<id>-0.txt`, `<id>.txt` and
`<id>-8.txt`. Downloads are retried with backoff, cached under a folder keyed by id with their
sha256, and a book that cannot be had is recorded as a reject instead of stopping the run.

Splitting is a heuristic over "blocks" (runs of non-blank lines): headings start poems, blank
runs of 3+ lines separate them, and each section is kept or dropped by its shape (verse vs
prose), because front and back matter is too varied to recognise by its headings alone.
"""

import codecs
import csv
import hashlib
import html
import json
import random
import re
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from emoverse import __version__
from emoverse.atomic import atomic_path
from emoverse.errors import (
    BookNotFoundError,
    EmoverseError,
    MirrorNotFoundError,
    MissingStageOutputError,
)
from emoverse.schema import POEM_SCHEMA, REJECT_SCHEMA

GUTENBERG_URL = "https://www.gutenberg.org"  # the public site, production default
USER_AGENT = "emoverse/" + ".".join(__version__.split(".")[:2])  # "emoverse/0.1"
# Polite by default: the site asks robots not to hammer it.
DEFAULT_PARALLEL = 2
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

# Reasons in the rejects table. Book level: the whole book is left out.
NOT_FOUND = "not found"
FETCH_FAILED = "fetch failed"
HTML_PAGE = "html error page"
ENCODING = "encoding"
EMPTY = "empty after stripping"
NOT_POETRY = "not poetry"
BOOK_REJECTS = (NOT_FOUND, FETCH_FAILED, HTML_PAGE, ENCODING, EMPTY, NOT_POETRY)
# Passage level: what the splitter or dedup left out of a book that was kept.
MATTER_DROPPED = "front/back matter dropped"
MOSTLY_PROSE = "mostly prose"
DUPLICATES = "duplicates dropped"
REJECT_REASONS = (*BOOK_REJECTS, MATTER_DROPPED, MOSTLY_PROSE, DUPLICATES)
# A book whose verse is under this share of its lines is rejected as not poetry.
MIN_VERSE_SHARE = 0.1


class BookRejectedError(EmoverseError):
    """A book that was fetched (or tried) but cannot be used; `reason` is one of BOOK_REJECTS."""

    def __init__(self, reason: str, detail: str, gutenberg_id: int | None = None):
        where = f"Gutenberg book {gutenberg_id}: " if gutenberg_id is not None else ""
        super().__init__(f"{where}{reason} ({detail})")
        self.reason = reason
        self.detail = detail
        self.gutenberg_id = gutenberg_id


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a download is tried: `attempts` in all, waiting
    base_delay * 2**k (at most max_delay) before retry k+1, stretched by up to `jitter` of
    itself at random so that parallel downloads do not retry in step."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        if min(self.base_delay, self.max_delay, self.jitter) < 0:
            raise ValueError("retry delays and jitter cannot be negative")

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `retry` (1 for the second attempt)."""
        base = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return base * (1.0 + self.jitter * rand())


DEFAULT_RETRY = RetryPolicy()


def book_path(gutenberg_id: int) -> str:
    """Path of a book's plain-text file relative to the mirror root (the site's own layout)."""
    return f"cache/epub/{int(gutenberg_id)}/pg{int(gutenberg_id)}.txt"


def book_paths(gutenberg_id: int) -> list[str]:
    """Where the site keeps a book's plain text, in the order to try: the generated UTF-8 file,
    then the uploaded UTF-8, ASCII and Latin-1 files that older books only have."""
    i = int(gutenberg_id)
    return [book_path(i), f"files/{i}/{i}-0.txt", f"files/{i}/{i}.txt", f"files/{i}/{i}-8.txt"]


def _rdf_path(gutenberg_id: int) -> str:
    return f"cache/epub/{int(gutenberg_id)}/pg{int(gutenberg_id)}.rdf"


def _is_url(mirror: str) -> bool:
    return mirror.startswith(("http://", "https://"))


def _local_folder(mirror: str) -> Path:
    """A local mirror given as a path or a file:// URL."""
    if mirror.startswith("file:"):
        return Path(unquote(urlparse(mirror).path))
    return Path(mirror).expanduser()


def _as_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


def _new_client(
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, max_parallel: int = DEFAULT_PARALLEL
) -> httpx.Client:
    # Redirects are followed because the public site redirects between hosts and schemes.
    return httpx.Client(
        timeout=_as_timeout(timeout),
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT},
        limits=httpx.Limits(max_connections=max_parallel, max_keepalive_connections=max_parallel),
    )


def check_mirror(mirror: str) -> None:
    """Fail early on a local mirror folder that does not exist; URLs are only checked on use
    (a network probe here would cost a round trip for every run)."""
    if _is_url(mirror):
        return
    folder = _local_folder(mirror)
    if not folder.is_dir():
        raise MirrorNotFoundError(f"Gutenberg mirror folder {folder} does not exist")


def looks_like_html(body: bytes, content_type: str = "") -> bool:
    """An HTML page (a proxy's or a CDN's error page served with status 200), not a book."""
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    head = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


class _Aborted(Exception):
    """Another download found the mirror unreachable: stop instead of retrying."""


class _Abort:
    """Shared by the downloads of one run: set when one of them finds the mirror unreachable
    (or the run stops), so that the others do not wait out their retries."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.error: MirrorNotFoundError | None = None

    def set(self, error: MirrorNotFoundError | None = None) -> None:
        if error is not None and self.error is None:
            self.error = error
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return type(exc).__name__ + (f": {text}" if text else "")


def _http_get(
    client: httpx.Client,
    url: str,
    mirror: str,
    retry: RetryPolicy,
    abort: _Abort | None = None,
) -> bytes | None:
    """The body at `url`, or None for a 404/410 (final). 5xx, 408/429, timeouts and dropped
    connections are retried. Raises MirrorNotFoundError when no attempt could even connect,
    BookRejectedError for an HTML page or when every attempt failed."""
    failures: list[str] = []
    only_connect_errors = True
    for attempt in range(1, retry.attempts + 1):
        if attempt > 1:
            time.sleep(retry.delay(attempt - 1))
        if abort is not None and abort.is_set():
            raise _Aborted
        try:
            # get() reads the whole body, so a connection dropped mid-body raises here.
            response = client.get(url)
        except httpx.RequestError as exc:
            only_connect_errors &= isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            failures.append(_describe(exc))
            continue
        only_connect_errors = False
        status = response.status_code
        if status in (404, 410):
            return None
        if status >= 500 or status in (408, 429):
            failures.append(f"HTTP {status}")
            continue
        if status != 200:
            raise BookRejectedError(FETCH_FAILED, f"HTTP {status} at {url}")
        if looks_like_html(response.content, response.headers.get("content-type", "")):
            raise BookRejectedError(HTML_PAGE, f"{url} served an HTML page with status 200")
        return response.content
    if only_connect_errors:
        raise MirrorNotFoundError(f"Gutenberg mirror {mirror} cannot be reached: {failures[-1]}")
    tries = "attempt" if retry.attempts == 1 else f"{retry.attempts} attempts"
    raise BookRejectedError(FETCH_FAILED, f"{failures[-1]} at {url} after {tries}")


# --- the raw cache ---------------------------------------------------------------------------


def _cache_files(cache_dir: Path, name: str) -> tuple[Path, Path]:
    """The cached file and its record: `<id>.txt` + `<id>.json`, `<id>.rdf` + `<id>.rdf.json`."""
    data = Path(cache_dir) / name
    meta = data.with_suffix(".json") if name.endswith(".txt") else data.with_name(name + ".json")
    return data, meta


def cached_file(cache_dir: Path, name: str) -> bytes | None:
    """A cached download if its record's size and sha256 still match the file; None when it is
    absent, truncated or corrupted (the caller fetches it again)."""
    data, meta = _cache_files(cache_dir, name)
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
        raw = data.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("size") != len(raw):
        return None
    if record.get("sha256") != hashlib.sha256(raw).hexdigest():
        return None
    return raw


def cache_store(cache_dir: Path, name: str, raw: bytes, url: str) -> None:
    """Write a complete download and its record, each through a temp file and a rename. The
    data goes first: a crash in between leaves a file without a record, which reads as absent."""
    data, meta = _cache_files(cache_dir, name)
    meta.unlink(missing_ok=True)  # an old record must not vouch for the new data
    with atomic_path(data) as tmp:
        tmp.write_bytes(raw)
    record = {
        "sha256": hashlib.sha256(raw).hexdigest(),
        "size": len(raw),
        "url": url,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


# --- one book --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedBook:
    gutenberg_id: int
    raw: bytes
    source: str  # the URL or file it came from
    from_cache: bool
    rdf: bytes | None = None  # only fetched when the header lacks a title or author


def _not_found(gutenberg_id: int, mirror: str) -> BookNotFoundError:
    return BookNotFoundError(f"Gutenberg book {gutenberg_id} not found at {mirror}")


def _get_book(
    mirror: str,
    gutenberg_id: int,
    client: httpx.Client | None,
    retry: RetryPolicy,
    cache_dir: Path | None,
    abort: _Abort | None = None,
) -> FetchedBook:
    if not _is_url(mirror):
        # A local folder is its own cache: reading it again costs no more than a copy would.
        check_mirror(mirror)
        folder = _local_folder(mirror)
        for rel in book_paths(gutenberg_id):
            path = folder / rel
            if path.is_file():
                raw = path.read_bytes()
                if looks_like_html(raw):
                    raise BookRejectedError(HTML_PAGE, f"{path} is an HTML page", gutenberg_id)
                return FetchedBook(gutenberg_id, raw, str(path), False)
        raise _not_found(gutenberg_id, mirror)
    name = f"{int(gutenberg_id)}.txt"
    if cache_dir is not None and (raw := cached_file(cache_dir, name)) is not None:
        return FetchedBook(gutenberg_id, raw, str(Path(cache_dir) / name), True)
    assert client is not None
    for rel in book_paths(gutenberg_id):
        url = f"{mirror.rstrip('/')}/{rel}"
        try:
            raw = _http_get(client, url, mirror, retry, abort)
        except BookRejectedError as exc:
            raise BookRejectedError(exc.reason, exc.detail, gutenberg_id) from None
        if raw is not None:
            if cache_dir is not None:
                cache_store(cache_dir, name, raw, url)
            return FetchedBook(gutenberg_id, raw, url, False)
    raise _not_found(gutenberg_id, mirror)


def _get_rdf(
    mirror: str, gutenberg_id: int, client: httpx.Client | None, cache_dir: Path | None
) -> bytes | None:
    """The book's RDF record, best effort (one attempt, any failure is None): only a fallback
    for the title and author."""
    if not _is_url(mirror):
        try:
            return (_local_folder(mirror) / _rdf_path(gutenberg_id)).read_bytes()
        except OSError:
            return None
    name = f"{int(gutenberg_id)}.rdf"
    if cache_dir is not None and (raw := cached_file(cache_dir, name)) is not None:
        return raw
    assert client is not None
    url = f"{mirror.rstrip('/')}/{_rdf_path(gutenberg_id)}"
    try:
        raw = _http_get(client, url, mirror, RetryPolicy(attempts=1))
    except EmoverseError:
        return None
    if raw is not None and cache_dir is not None:
        cache_store(cache_dir, name, raw, url)
    return raw


def fetch_book(
    mirror: str,
    gutenberg_id: int,
    *,
    client: httpx.Client | None = None,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    retry: RetryPolicy = DEFAULT_RETRY,
    cache_dir: Path | None = None,
) -> bytes:
    """The raw bytes of one book from an http(s) mirror or a local folder mirror, through the
    cache when `cache_dir` is given.

    Raises MirrorNotFoundError when the mirror itself is missing or unreachable (every attempt
    refused or unresolvable), BookNotFoundError when no URL pattern has the book (404), and
    BookRejectedError when retries ran out or the server sent an HTML page.
    """
    check_mirror(mirror)
    own_client = client is None and _is_url(mirror)
    http = _new_client(timeout) if own_client else client
    try:
        return _get_book(mirror, gutenberg_id, http, retry, cache_dir).raw
    finally:
        if own_client and http is not None:
            http.close()


# --------------------------------------------------------------------------------------------
# Decoding and boilerplate
# --------------------------------------------------------------------------------------------

# Control characters other than \n and \t: form feeds between pages, stray escapes, a BOM
# repeated where files were concatenated.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufeff]")


def decode_book(raw: bytes) -> str:
    """Clean text of a book: UTF-8 (BOM dropped), UTF-16 with a BOM, else cp1252 (a superset
    of Latin-1's printable range); line ends normalised to \\n, control characters dropped.

    Raises BookRejectedError(ENCODING) for what is not text at all (NUL bytes: a binary or
    mis-declared file) or is mostly undecodable.
    """
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = raw.decode("utf-16", errors="replace")
    else:
        if raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # Pre-Unicode Gutenberg files are Latin-1/cp1252; cp1252 is a superset for the
            # printable range, and "replace" covers its five undefined bytes.
            text = raw.decode("cp1252", errors="replace")
    if "\x00" in text:
        raise BookRejectedError(ENCODING, "NUL bytes: not a plain-text file")
    bad = text.count("\ufffd")
    if bad > max(20, len(text) // 200):
        raise BookRejectedError(ENCODING, f"{bad} undecodable characters")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # A form feed is a page break: keep it as a line break so that the lines around it stay apart.
    return _CONTROL.sub(lambda m: "\n" if m.group() == "\x0c" else "", text)


_TITLE_LINE = re.compile(r"^Title:\s*(.*\S)\s*$")
_AUTHOR_LINE = re.compile(r"^Author:\s*(.*\S)\s*$")
# Old files have no Title:/Author: lines but open with "Project Gutenberg Etext of X, by Y".
_OLD_FIRST_LINE = re.compile(
    r"project gutenberg(?:'s)? e-?(?:text|book)(?:\s+of|:)\s+(.+?)(?:,?\s+by\s+(.+?))?[\s*]*$",
    re.IGNORECASE,
)
_START = re.compile(r"^\s*\*{3}\s*START OF", re.IGNORECASE)
_END = re.compile(r"^\s*\*{3}\s*END OF", re.IGNORECASE)
# Footer lines that precede (or replace) the *** END line.
_FOOTER = re.compile(
    r"^\s*(?:the\s+)?end\s+of\s+(?:the\s+|this\s+)?project\s+gutenberg", re.IGNORECASE
)
# 3039 writes "*END THE SMALL PRINT", the others "*END*THE SMALL PRINT".
_SMALL_PRINT_END = re.compile(r"\*\s*END\s*\*?\s*THE SMALL PRINT", re.IGNORECASE)
# "Produced by ...", "This etext was prepared by ...", "Etext scanned by ...",
# "Transcribed from the 1909 edition by ...".
_CREDIT = re.compile(
    r"^\s*(?:this\s+)?(?:(?:project\s+)?gutenberg\s+)?(?:e-?text|e-?book)?\s*(?:was\s+)?"
    r"(?:produced|prepared|scanned|transcribed)\s+(?:by|from)\b",
    re.IGNORECASE,
)


def _header_lines(text: str) -> list[str]:
    lines = text.split("\n")
    for i, line in enumerate(lines[:600]):
        if _START.match(line) or _SMALL_PRINT_END.search(line):
            return lines[:i]
    return lines[:120]


def parse_metadata(text: str) -> tuple[str | None, str | None]:
    """(title, author) from the header's Title:/Author: lines; for old files without them,
    from the "Project Gutenberg Etext of <title>, by <author>" opening line. None if absent."""
    header = _header_lines(text)
    title = author = None
    for i, line in enumerate(header):
        if title is None and (m := _TITLE_LINE.match(line)):
            parts = [m.group(1)]
            # Long titles continue on indented lines.
            for nxt in header[i + 1 :]:
                if not nxt.strip() or not nxt[0].isspace():
                    break
                parts.append(nxt.strip())
            title = " ".join(parts)
        elif author is None and (m := _AUTHOR_LINE.match(line)):
            author = m.group(1)
    if title is None:
        for line in header[:10]:
            if m := _OLD_FIRST_LINE.search(line.strip().strip("*")):
                title = m.group(1).strip(' "*')
                author = author or (m.group(2).strip(' "*') if m.group(2) else None)
                break
    return (_squash(title), _squash(author))


def _squash(value: str | None) -> str | None:
    """Collapse runs of whitespace; an empty value is None."""
    if value is None:
        return None
    return re.sub(r"\s+", " ", value).strip() or None


def strip_boilerplate(text: str) -> str:
    """The body between the Gutenberg header and footer, without a leading credits paragraph."""
    lines = text.split("\n")
    start = 0
    for i, line in enumerate(lines):
        if _START.match(line):
            start = i + 1
            break
    else:
        # Pre-2001 files: the body starts after the SMALL PRINT licence.
        for i, line in enumerate(lines):
            if _SMALL_PRINT_END.search(line):
                start = i + 1
                break
    end = len(lines)
    for i in range(start, len(lines)):
        if _END.match(lines[i]) or _FOOTER.match(lines[i]):
            end = i
            break
    body = lines[start:end]
    # Drop a leading "Produced by ..." / "This etext was prepared by ..." paragraph.
    i = 0
    while i < len(body) and not body[i].strip():
        i += 1
    if i < len(body) and _CREDIT.match(body[i]):
        while i < len(body) and body[i].strip():
            i += 1
        body = body[i:]
    return "\n".join(body).strip("\n")


# --------------------------------------------------------------------------------------------
# Splitting into poems
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoemPassage:
    poem_title: str | None
    passage_index: int  # 0 for a whole poem or its first passage
    text: str  # stanzas separated by one blank line, common indent removed


@dataclass(eq=False)
class _Block:
    lines: list[str]
    gap_before: int  # blank lines before the block (large at the start of the body)
    gap_after: int
    # Shape, computed once: a block is looked at from several rules.
    _prose: bool | None = None
    _verse: bool | None = None
    _junk: bool | None = None

    @property
    def prose(self) -> bool:
        if self._prose is None:
            self._prose = _is_prose(self)
        return self._prose

    @property
    def junk(self) -> bool:
        if self._junk is None:
            self._junk = _is_junk(self)
        return self._junk

    @property
    def verse(self) -> bool:
        if self._verse is None:
            self._verse = not (self.prose or self.junk or _is_list(self))
        return self._verse


_ROMAN = r"(?=[MDCLXVI])M{0,4}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
_NUMERAL = re.compile(rf"^[\[(\-–—\s]*(?:{_ROMAN}|{_ROMAN.lower()}|\d{{1,4}})[.:)\]]?[\-–—\s]*$")
_KEYWORD_HEADING = re.compile(
    rf"^(?:sonnet|canto|book|part|song|ode|elegy|psalm|chapter|stanza|hymn|section|poem|fytte"
    rf"|lesson|no\.?|number)\s+(?:(?=[MDCLXVI]+\b){_ROMAN}|\d{{1,4}})\b[.:]?.{{0,50}}$",
    re.IGNORECASE,
)
# Sections that are never poems, whatever their shape.
_ALWAYS_SKIP = re.compile(
    r"^[^\w\[(]*(?:table of )?(?:contents|index|notes?\b|footnotes|glossary|vocabulary"
    r"|transcriber|errata|list of|illustrations|bibliography|memoir|biograph|appendix"
    r"|acknowledg|advertisement|editor'?s? (?:note|introduction|preface)|editorial"
    r"|abbreviations|textual (?:appendix|notes)|variants|various readings|chronolog"
    r"|the end\b|finis\b)",
    re.IGNORECASE,
)
# Sections that are usually prose but may be a poem (Blake's "INTRODUCTION"): decided by shape.
_MAYBE_SKIP = re.compile(r"^(?:preface|introduction|introductory|foreword|prefatory)", re.I)
# A prose summary under a book heading ('BOOK I' / 'THE ARGUMENT.'): not the poem's title.
_ARGUMENT = re.compile(r"^(?:the )?argument\b", re.IGNORECASE)
_SEPARATOR = re.compile(r"^[\s*.\-_=~#+·•]*$")
_PAGE_REF = re.compile(r"(?:\s{2,}|\.\s*\.\s*|\s)(?:\d{1,4}|[ivxlc]{1,7})\.?\s*$")
_ENTRY_START = re.compile(rf"^\s*(?:{_ROMAN}|\d{{1,4}})\.?\s{{2,}}\S")
# Margin line numbers: "...Hofgarten,          10", "...with my tears.  192", "...true [17]",
# "...cope him first. 888" (one space only after a sentence, and no year: "Blake. 1780").
_LINE_NUMBER = re.compile(
    r"(?:(?<=\S)\s{2,}_?\d{1,4}_?|(?<=\S)\s*\[\d{1,4}\]|(?<=[.;:!?]) \d{1,3})$"
)
# Footnote markers inside a line: "Ram <1>", "sedentem<4.1>", "<<49.4>>", "word[12]", "[A]", "†".
_FOOTNOTE_MARK = re.compile(r"\s?(?:<{1,2}\d{1,4}(?:\.\d{1,3})?>{1,2}|\[\d{1,3}\]|\[[A-Z*]\]|[†‡])")
# Page marks: "{13}", "[Pg 13]".
_PAGE_MARK = re.compile(r"\s*(?:\{\d+\}|\[(?:Pg|Page|p\.)\s*\d+\])\s*", re.IGNORECASE)
# Editorial notes: a block opened by 'NOTES:' or made of keyed notes ('_87 Regarding cj.',
# '<82.5> A form of...', '[3] See...', 'Line 415 aetherial] aethereal').
_NOTES_LABEL = re.compile(
    r"^\s*(?:notes?|footnotes?|variants?|various readings|textual notes?)\s*[:.]?\s*$", re.I
)
_NOTE_KEY = re.compile(
    r"^\s*(?:_\d{1,4}\b|<{1,2}\d{1,4}(?:\.\d{1,3})?>{1,2}|\[\d{1,3}\]\s+\S|line \d+\s.*\])", re.I
)
# Glosses set between the lines of annotated editions: 'bootless > hopelessly'.
_GLOSS = re.compile(r"^\s*[^\s>][^>]{0,60}\s>\s\S")
# Stanza references alone on a line: '105.34', '1.2.3'.
_REFERENCE = re.compile(r"^\s*\d+(?:[.:]\d+)+\.?\s*$")
# A margin line number before the verse: '2    From slaughter of the Giaunts conquered;'.
_LEADING_NUMBER = re.compile(r"^(\s*)(\d{1,4})(\s{2,})(?=\S)")
_TITLE_END_OK = re.compile(r"[^,;:\-–—]$")


def _clean_line(line: str) -> str | None:
    """A line without page marks; None for a page-mark-only line, which is dropped rather
    than left blank so that it does not split a stanza."""
    line = line.expandtabs(8).rstrip()
    if _PAGE_MARK.search(line):
        line = _PAGE_MARK.sub(" ", line).rstrip()
        if not line.strip():
            return None
    return line


def _unmarked(line: str) -> str:
    """A verse line without margin line numbers and footnote markers. (Done on output only:
    the page numbers of a contents list are what shows it is not verse.)"""
    line = line.rstrip()
    if line[-1:].isdigit() or line.endswith("]"):
        line = _LINE_NUMBER.sub("", line)
    if line.lstrip()[:1].isdigit():
        # The number is blanked, not cut, so that the line keeps its indent among the others.
        line = _LEADING_NUMBER.sub(lambda m: m[1] + " " * len(m[2] + m[3]), line)
    if any(c in line for c in "<[†‡"):
        unmarked = _FOOTNOTE_MARK.sub("", line).rstrip()
        return unmarked if unmarked.strip() else line
    return line


def _blocks(body: str) -> list[_Block]:
    blocks: list[_Block] = []
    current: list[str] = []
    gap = 1000  # the start of the body counts as a big gap
    for raw in body.split("\n"):
        line = _clean_line(raw)
        if line is None:
            continue
        if line.strip():
            if not current and blocks:
                blocks[-1].gap_after = gap
            if not current:
                blocks.append(_Block([], gap, 1000))
                current = blocks[-1].lines
            current.append(line)
            gap = 0
        else:
            if current:
                current = []
            gap += 1
    return blocks


def _strong_heading(text: str) -> bool:
    """All caps ('THE SHEPHERD'), a numeral ('XVIII.', '12.') or 'SONNET XVIII'-style."""
    s = text.strip()
    if not s or len(s) > 70:
        return False
    if s != s.upper():  # has lowercase letters: only 'xviii.' or 'Sonnet XVIII' qualify
        return bool(_NUMERAL.match(s) or _KEYWORD_HEADING.match(s))
    if _NUMERAL.match(s):
        return True
    # A signature ('---JT') or a rule is not a title.
    return s[0] not in "-–—_*" and sum(1 for c in s if c.isalpha()) >= 2


_WORD_EDGE = "\"'‘’“”()[]_.,;:!?-—*"


def _titlelike(text: str) -> bool:
    """A line in Title Case ('The Echoing Green'): every word of 4+ letters capitalised."""
    found = False
    for word in text.split():
        word = word.strip(_WORD_EDGE)
        if len(word) >= 4 and word[0].isalpha():
            if not word[0].isupper():
                return False
            found = True
    return found


def _is_byline(text: str) -> bool:
    s = text.strip().lower()
    return s == "by" or (s.startswith("by ") and len(s) < 60)


def _is_junk(block: _Block) -> bool:
    """Separators, editorial [notes] and keyed notes, bylines and anything that mentions
    Project Gutenberg."""
    joined = " ".join(line.strip() for line in block.lines)
    if "gutenberg" in joined.lower():
        return True
    if all(_SEPARATOR.match(line) for line in block.lines):
        return True
    if joined.startswith("[") and joined.endswith("]"):
        return True
    if _NOTES_LABEL.match(block.lines[0]):
        return True
    notes = sum(1 for line in block.lines if _NOTE_KEY.match(line) or _GLOSS.match(line))
    if notes * 2 >= len(block.lines) or all(_REFERENCE.match(line) for line in block.lines):
        return True
    # Boxed text drawn with | and +---.
    if sum(1 for line in block.lines if line.lstrip()[:1] in "|+") * 2 >= len(block.lines):
        return True
    # 'by William Blake', or 'BY' / 'ROBERT LOUIS STEVENSON'.
    return len(block.lines) <= 2 and _is_byline(block.lines[0])


def _is_list(block: _Block) -> bool:
    """A contents or index block: entries with page numbers, or lines of titles."""
    lines = [line.strip() for line in block.lines]
    if len(lines) == 2:
        # 'DANNY DEEVER' / its first line: a contents entry "followed by first lines".
        return _strong_heading(lines[0]) and not _strong_heading(lines[1])
    if len(lines) < 3:
        return False
    misses = 0
    for s in lines:
        if not (
            _PAGE_REF.search(s) or _ENTRY_START.match(s) or (s[-1] not in ",;:!?" and _titlelike(s))
        ):
            misses += 1
            if misses > 0.25 * len(lines):
                return False
    return True


def _is_prose(block: _Block) -> bool:
    """Wrapped paragraphs: long lines that run on into lowercase continuations. (Line-end
    punctuation is no guide: enjambed verse and dash-ended lines look like prose there.)"""
    lines = block.lines
    if len(lines) == 1:
        return len(lines[0].strip()) >= 80
    body = lines[:-1]  # the last line of a paragraph is short
    long = sum(1 for line in body if len(line.rstrip()) >= 55) / len(body)
    if long < 0.6:
        return False
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    # Only continuation lines at the paragraph's own indent count: Whitman's wrapped long
    # lines continue lowercase but indented deeper.
    flush = [line.strip() for line in lines[1:] if len(line) - len(line.lstrip()) <= indent + 1]
    lower = sum(1 for s in flush if s[0].islower()) / max(len(flush), 1)
    return lower >= 0.25


def _heading_kind(block: _Block, nxt: _Block | None, after_heading: bool) -> str | None:
    """'skip', 'maybe', 'argument', 'title' or 'weak' (a Title Case title) if the block is a
    heading, else None. after_heading: the block directly follows a heading."""
    if len(block.lines) > 2:
        return None
    text = " ".join(line.strip() for line in block.lines)
    if len(text) > 70 or _is_byline(text) or "gutenberg" in text.lower():
        return None
    if _ALWAYS_SKIP.match(text):
        return "skip" if len(block.lines) == 1 or _strong_heading(text) else None
    one_line = len(block.lines) == 1 or _strong_heading(text)
    if _MAYBE_SKIP.match(text) and one_line:
        return "maybe"
    if _ARGUMENT.match(text) and one_line:
        return "argument"
    if all(_strong_heading(line) for line in block.lines):
        return "title"
    # A Title Case line alone ('One's-Self I Sing') right before verse, set off above more
    # than below or right under a numeral ('I' / 'The Peace-Pipe'): how books without caps
    # titles head their poems.
    if (
        len(block.lines) == 1
        and (after_heading or (block.gap_before >= 2 and block.gap_before > block.gap_after))
        and nxt is not None
        and len(nxt.lines) >= 2
        and not nxt.prose
        and text[0].isupper()
        and _TITLE_END_OK.search(text)
        and len(text.split()) <= 10
        and _titlelike(text)
    ):
        return "weak"
    return None


@dataclass
class _Section:
    title: str | None
    kind: str  # "title"/"maybe" (kept or dropped by shape) or "skip" (always dropped)
    blocks: list[_Block]
    has_content: bool = False  # a block that is not junk (a byline, a separator)


def _title_key(title: str | None) -> str:
    # Numerals recur in every part of a book; only names identify a poem.
    return "" if title is None or _NUMERAL.match(title) else normalize_for_dedup(title)


def _sections(blocks: list[_Block]) -> list[_Section]:
    sections = [_Section(None, "title", [])]
    # Titles of sections that held verse: the poems already read.
    poem_titles: set[str] = set()

    def start(section: _Section) -> None:
        last = sections[-1]
        if last.kind != "skip" and any(b.verse for b in last.blocks):
            poem_titles.add(_title_key(last.title))
        sections.append(section)

    for i, block in enumerate(blocks):
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        current = sections[-1]
        # Bylines and separators under a heading do not end it ('A LOVER'S COMPLAINT' /
        # 'by William Shakespeare' / five blank lines / the poem).
        has_content = current.has_content
        after_heading = current.title is not None and not has_content
        kind = _heading_kind(block, nxt, after_heading)
        if kind == "weak":
            # Inside contents or notes a Title Case line is an entry, not a new poem.
            kind = None if current.kind == "skip" else "title"
        if kind is not None:
            title = " ".join(line.strip() for line in block.lines)
            if kind == "argument":
                # The argument's prose is dropped by shape; the book heading stays the title.
                title, kind = current.title, "title"
            key = _title_key(title)
            if kind == "title" and current.kind == "skip" and key and key in poem_titles:
                # Notes repeat the titles of the poems they annotate ('NOTES' / 'II. A GAME
                # OF CHESS' / '77. Cf. ...'): such a heading does not end the skipped section.
                # (Contents entries come before their poems, so they never match.)
                kind = "skip"
            if has_content:
                start(_Section(title, kind, []))
            else:
                # Stacked headings ('SONGS OF INNOCENCE' / 'INTRODUCTION'): the last one names
                # the poem and decides whether its section is skipped.
                current.title, current.kind = title, kind
            continue
        # A wide gap ends a poem; after a skipped section it ends the skip only at verse.
        if block.gap_before >= 3 and has_content and (current.kind != "skip" or block.verse):
            start(_Section(None, "title", []))
        sections[-1].blocks.append(block)
        sections[-1].has_content |= not block.junk
    return sections


def _is_title_page(stanzas: list[list[str]]) -> bool:
    """Title pages and dedications ('THE COLLECTED POEMS' / 'with a memoir by ...') that
    slipped through as short 'verse': mostly caps, Title Case or byline lines."""
    titley = verse = 0
    n_lines = sum(len(stanza) for stanza in stanzas)
    for stanza in stanzas:
        for line in stanza:
            if verse * 2 > n_lines:
                return False  # the title-like lines can no longer catch up
            s = line.strip()
            n_long = sum(1 for w in s.split() if len(w) >= 4)
            if s[-1] in ",;:!?":  # verse punctuation, even in a line of capitals
                verse += n_long >= 2
            elif _strong_heading(s) or _is_byline(s) or (n_long >= 2 and _titlelike(s)):
                titley += 1
            elif n_long >= 2:
                verse += 1
    return titley > 0 and titley >= verse


def _clean_title(title: str | None) -> str | None:
    if title is None:
        return None
    title = re.sub(r"\s+", " ", title).strip().rstrip(".").strip()
    return title or None


# Where a long stanza (blank verse runs on for pages) is best cut: after a sentence, else
# after a clause.
_SENTENCE_END = re.compile(r"[.!?][\"'’”)\]_]*\s*$")
_CLAUSE_END = re.compile(r"[;:][\"'’”)\]_]*\s*$")


def _cut_stanza(stanza: list[str], max_lines: int) -> list[list[str]]:
    """A stanza in pieces of at most max_lines lines, each ending at the last sentence end
    (else clause end) in the second half of its window, else at max_lines."""
    pieces: list[list[str]] = []
    start = 0
    while len(stanza) - start > max_lines:
        window = range(start + max_lines, start + max_lines // 2, -1)  # cut after line e-1
        end = next((e for e in window if _SENTENCE_END.search(stanza[e - 1])), None)
        if end is None:
            end = next((e for e in window if _CLAUSE_END.search(stanza[e - 1])), None)
        end = end or start + max_lines
        pieces.append(stanza[start:end])
        start = end
    pieces.append(stanza[start:])
    return pieces


def _passages(stanzas: list[list[str]], max_lines: int) -> list[list[list[str]]]:
    """Cut a poem into passages of at most max_lines lines at stanza boundaries; a stanza
    longer than max_lines is itself cut, at a sentence end where there is one."""
    pieces: list[list[str]] = []
    for stanza in stanzas:
        pieces.extend(_cut_stanza(stanza, max_lines))
    passages: list[list[list[str]]] = []
    current: list[list[str]] = []
    size = 0
    for piece in pieces:
        if current and size + len(piece) > max_lines:
            passages.append(current)
            current, size = [], 0
        current.append(piece)
        size += len(piece)
    if current:
        passages.append(current)
    return passages


def _format(stanzas: list[list[str]]) -> str:
    parts = []
    for stanza in stanzas:
        # A numeral over a stanza ('91.', '10') numbers a stanza or a section; it is not verse.
        if len(stanza) > 2 and _NUMERAL.match(stanza[0]):
            stanza = stanza[1:]
        text = "\n".join(_unmarked(line) for line in stanza)
        if any(_LEADING_NUMBER.match(line) for line in stanza):
            text = textwrap.dedent(text)  # the blanked margin is not the poem's indent
        parts.append(text)
    return textwrap.dedent("\n\n".join(parts)).strip("\n")


@dataclass(frozen=True)
class _Drop:
    kind: str  # MATTER_DROPPED or MOSTLY_PROSE
    title: str | None
    lines: int
    detail: str = ""


def split_poems(body: str, *, max_lines: int = 40) -> list[PoemPassage]:
    """Split a stripped book body into poems, and long poems into passages.

    Headings (caps, numerals, 'SONNET XVIII', or a Title Case line set off before verse) and
    gaps of 3+ blank lines start poems; single blank lines are stanza breaks. Sections made
    mostly of prose (prefaces, notes), contents/index lists and editorial notes are dropped.
    A poem needs 2+ verse lines and one stanza of 2+ lines (title pages are one-liners).
    """
    return _split(body, max_lines)[0]


def _split(body: str, max_lines: int) -> tuple[list[PoemPassage], list[_Drop]]:
    """split_poems, and what it dropped (for the rejects table)."""
    if max_lines < 1:
        raise ValueError("max_lines must be at least 1")
    poems: list[tuple[str | None, list[list[str]]]] = []
    drops: list[_Drop] = []
    for section in _sections(_blocks(body)):
        title = _clean_title(section.title)
        n_lines = sum(len(b.lines) for b in section.blocks)
        if section.kind == "skip":
            if n_lines:
                drops.append(_Drop(MATTER_DROPPED, title, n_lines))
            continue
        verse = [b for b in section.blocks if b.verse]
        prose_lines = sum(len(b.lines) for b in section.blocks if b.prose)
        verse_lines = sum(len(b.lines) for b in verse)
        # Decide by shape, not heading: a prose-dominated section is front/back matter.
        if prose_lines > verse_lines:
            # A titled section with a real stanza may be a poem under a long prose note.
            if title and verse_lines >= 4 and not _MAYBE_SKIP.match(title):
                detail = f"{verse_lines} verse lines under {prose_lines} lines of prose"
                drops.append(_Drop(MOSTLY_PROSE, title, n_lines, detail))
            else:
                drops.append(_Drop(MATTER_DROPPED, title, n_lines))
            continue
        stanzas = [b.lines for b in verse]
        if verse_lines < 2 or max(len(s) for s in stanzas) < 2 or _is_title_page(stanzas):
            if n_lines:
                drops.append(_Drop(MATTER_DROPPED, title, n_lines))
            continue
        poems.append((title, stanzas))
    out: list[PoemPassage] = []
    kept = _drop_first_line_entries(poems)
    for title, stanzas in poems:
        if not any(stanzas is k for _, k in kept):
            drops.append(_Drop(MATTER_DROPPED, title, sum(len(s) for s in stanzas)))
    for title, stanzas in kept:
        for index, passage in enumerate(_passages(stanzas, max_lines)):
            out.append(PoemPassage(title, index, _format(passage)))
    return out, drops


def _drop_first_line_entries(
    poems: list[tuple[str | None, list[list[str]]]],
) -> list[tuple[str | None, list[list[str]]]]:
    """Drop short 'poems' that are only the opening of another poem in the book: entries
    of an index of first lines laid out like tiny poems ('VIII' / two opening lines)."""
    keys = [normalize_for_dedup(" ".join(" ".join(s) for s in stanzas)) for _, stanzas in poems]
    kept = []
    for (title, stanzas), key in zip(poems, keys, strict=True):
        short = sum(len(s) for s in stanzas) <= 4
        if short and any(k != key and k.startswith(key) for k in keys):
            continue
        kept.append((title, stanzas))
    return kept


# --------------------------------------------------------------------------------------------
# Rows, dedup
# --------------------------------------------------------------------------------------------


def normalize_for_dedup(text: str) -> str:
    """Lowercase letters and digits only, single spaces: the same poem from two editions
    (different quotes, dashes, indents, line ends) normalises to the same string."""
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


def _reject(
    gutenberg_id: int,
    reason: str,
    detail: str,
    poem_title: str | None = None,
    passage_index: int | None = None,
) -> dict:
    return {
        "gutenberg_id": int(gutenberg_id),
        "poem_title": poem_title,
        "passage_index": passage_index,
        "reason": reason,
        "detail": detail,
    }


def _book_rows(
    gutenberg_id: int,
    raw: bytes,
    *,
    max_lines: int,
    metadata: tuple[str | None, str | None] | None,
    rdf: bytes | None = None,
) -> tuple[list[dict], list[dict]]:
    """(POEM_SCHEMA rows, passage-level reject rows) of one raw book; raises BookRejectedError
    for a book that yields nothing."""
    text = decode_book(raw)
    if metadata is None:
        title, author = parse_metadata(text)
        if (title is None or author is None) and rdf is not None:
            rdf_title, rdf_author = parse_rdf(rdf)
            title, author = title or rdf_title, author or rdf_author
    else:
        title, author = metadata
    body = strip_boilerplate(text)
    if not body.strip():
        raise BookRejectedError(EMPTY, "no text between the Gutenberg header and footer")
    passages, drops = _split(body, max_lines)
    rejects = _drop_rejects(gutenberg_id, drops)
    lines = sum(1 for line in body.split("\n") if line.strip())
    if not passages:
        raise BookRejectedError(NOT_POETRY, f"no poem found in {lines} lines of text")
    verse = sum(p.text.count("\n") + 1 - p.text.count("\n\n") for p in passages)
    if verse < MIN_VERSE_SHARE * lines:
        # Prose poems (Gitanjali) or verse reflowed into paragraphs by a bad transcription
        # (Goldsmith 3545): the few "poems" found are scraps.
        raise BookRejectedError(NOT_POETRY, f"only {verse} of {lines} lines read as verse")
    sha = hashlib.sha256(raw).hexdigest()
    rows = []
    for i, passage in enumerate(passages):
        rows.append(
            {
                "poem_id": f"{gutenberg_id}-{i:05d}",
                "gutenberg_id": int(gutenberg_id),
                "book_title": title,
                "author": author,
                "poem_title": passage.poem_title,
                "passage_index": passage.passage_index,
                "text": passage.text,
                "n_lines": sum(1 for line in passage.text.split("\n") if line.strip()),
                "n_words": len(passage.text.split()),
                "source_sha256": sha,
            }
        )
    return rows, rejects


def _drop_rejects(gutenberg_id: int, drops: list[_Drop]) -> list[dict]:
    """Reject rows for what the splitter left out: one summary row for front and back matter
    (prose, contents, notes: not worth a row each), one row per titled section that held some
    verse but was dropped as mostly prose (it may be a poem with a long prose note)."""
    rows = []
    matter = [d for d in drops if d.kind != MOSTLY_PROSE]
    if matter:
        lines = sum(d.lines for d in matter)
        rows.append(_reject(gutenberg_id, MATTER_DROPPED, f"{len(matter)} blocks, {lines} lines"))
    for d in drops:
        if d.kind == MOSTLY_PROSE:
            rows.append(_reject(gutenberg_id, MOSTLY_PROSE, d.detail, d.title))
    return rows


def book_to_rows(
    gutenberg_id: int,
    raw: bytes,
    *,
    max_lines: int = 40,
    metadata: tuple[str | None, str | None] | None = None,
) -> list[dict]:
    """Rows matching POEM_SCHEMA for one raw book file; poem_id is stable across runs.
    `metadata` (title, author), e.g. from the catalog, replaces what the header says. A book
    that yields no poem gives no rows (ingest_books records why)."""
    try:
        return _book_rows(gutenberg_id, raw, max_lines=max_lines, metadata=metadata)[0]
    except BookRejectedError:
        return []


def _dedupe_into(rows: Iterable[dict], seen: set[str]) -> list[dict]:
    kept = []
    for row in rows:
        key = normalize_for_dedup(row["text"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def dedupe_rows(rows: list[dict]) -> list[dict]:
    """Keep the first row of each normalised text (1062 contains 1065; 12242 contains 2678
    and 2679)."""
    return _dedupe_into(rows, set())


# --------------------------------------------------------------------------------------------
# Ingest, write, report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestResult:
    poems: pa.Table  # POEM_SCHEMA
    rejects: pa.Table  # REJECT_SCHEMA
    fetched: int  # books downloaded (or read from a local folder mirror) in this run
    from_cache: int  # books read from the raw cache, their checksum verified
    ingested: tuple[int, ...] = field(default=())  # ids not rejected as a whole, in order

    @property
    def books(self) -> int:
        return len(self.ingested)


def _fetch_worker(
    mirror: str,
    gutenberg_id: int,
    client: httpx.Client | None,
    retry: RetryPolicy,
    cache_dir: Path | None,
    abort: _Abort,
    want_rdf: bool,
) -> FetchedBook:
    try:
        book = _get_book(mirror, gutenberg_id, client, retry, cache_dir, abort)
    except MirrorNotFoundError as exc:
        abort.set(exc)  # the other downloads would only wait out their retries
        raise
    if want_rdf:
        try:
            title, author = parse_metadata(decode_book(book.raw))
        except BookRejectedError:
            return book  # rejected when parsed; no metadata needed
        if title is None or author is None:
            rdf = _get_rdf(mirror, gutenberg_id, client, cache_dir)
            book = FetchedBook(book.gutenberg_id, book.raw, book.source, book.from_cache, rdf)
    return book


def ingest_books(
    mirror: str,
    ids: Sequence[int],
    *,
    cache_dir: Path | None = None,
    catalog: Mapping[int, tuple[str | None, str | None]] | None = None,
    on_book: Callable[[int, int], None] | None = None,
    max_lines: int = 40,
    max_parallel: int = DEFAULT_PARALLEL,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> IngestResult:
    """Fetch (at most `max_parallel` at a time, through `cache_dir`), parse and dedupe books.

    A book that is missing, fails to download after retries, is an HTML page, cannot be
    decoded or yields no poem goes to the rejects with its reason; the others are kept, in
    the order of `ids`. `catalog` maps ids to (title, author) and wins over the book's header
    (the RDF record is the fallback when the header lacks them). on_book(gutenberg_id,
    n_rows) runs for every id in order, with the rows it added after dedup (0 if rejected).

    Raises MirrorNotFoundError when the mirror cannot be reached at all, and
    BookNotFoundError (every id missing) or BookRejectedError when no book could be ingested.
    """
    if max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    check_mirror(mirror)
    ids = list(dict.fromkeys(int(i) for i in ids))  # a repeated id would only add duplicates
    rows: list[dict] = []
    rejects: list[dict] = []
    ingested: list[int] = []
    book_rejects: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    fetched = from_cache = 0
    abort = _Abort()
    # One connection pool for all books (none needed for a local folder).
    client_cm = _new_client(timeout, max_parallel) if _is_url(mirror) else nullcontext()
    with client_cm as client, ThreadPoolExecutor(max_parallel, "gutenberg-fetch") as pool:
        futures: list[Future[FetchedBook]] = [
            pool.submit(
                _fetch_worker,
                mirror,
                gid,
                client,
                retry,
                cache_dir,
                abort,
                catalog is None or gid not in catalog,
            )
            for gid in ids
        ]
        try:
            # Parsing in id order while later books download keeps the output deterministic.
            for gid, future in zip(ids, futures, strict=True):
                kept = 0
                reject: tuple[int, str, str] | None = None
                try:
                    book = future.result()
                    fetched += not book.from_cache
                    from_cache += book.from_cache
                    meta = catalog.get(gid) if catalog is not None else None
                    book_rows, passage_rejects = _book_rows(
                        gid, book.raw, max_lines=max_lines, metadata=meta, rdf=book.rdf
                    )
                except BookNotFoundError:
                    reject = (gid, NOT_FOUND, f"none of {', '.join(book_paths(gid))} at {mirror}")
                except BookRejectedError as exc:
                    reject = (gid, exc.reason, exc.detail)
                else:
                    new = _dedupe_into(book_rows, seen)
                    kept = len(new)
                    rows.extend(new)
                    rejects.extend(passage_rejects)
                    if kept < len(book_rows):
                        n = len(book_rows) - kept
                        detail = f"{n} of {len(book_rows)} passages already ingested"
                        rejects.append(_reject(gid, DUPLICATES, detail))
                    ingested.append(gid)
                if reject is not None:
                    book_rejects.append(reject)
                    rejects.append(_reject(*reject))
                if on_book is not None:
                    on_book(gid, kept)
        except BaseException as exc:
            abort.set()
            for f in futures:
                f.cancel()
            if isinstance(exc, _Aborted) and abort.error is not None:
                # This book stopped because another download found the mirror unreachable.
                raise abort.error from None
            raise
    if not ingested:
        _raise_nothing_ingested(mirror, book_rejects)
    return IngestResult(
        poems=pa.Table.from_pylist(rows, schema=POEM_SCHEMA),
        rejects=pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA),
        fetched=fetched,
        from_cache=from_cache,
        ingested=tuple(ingested),
    )


def _raise_nothing_ingested(mirror: str, book_rejects: list[tuple[int, str, str]]) -> None:
    if not book_rejects:
        raise EmoverseError("no Gutenberg ids given")
    names = ", ".join(str(gid) for gid, _, _ in book_rejects)
    if all(reason == NOT_FOUND for _, reason, _ in book_rejects):
        which = "book" if len(book_rejects) == 1 else "books"
        raise BookNotFoundError(f"Gutenberg {which} {names} not found at {mirror}")
    why = "; ".join(f"{gid}: {reason} ({detail})" for gid, reason, detail in book_rejects)
    raise BookRejectedError(book_rejects[0][1], f"no book could be ingested from {mirror}: {why}")


# Bump when parsing or splitting changes, so that cached ingests are redone.
SPLITTER_VERSION = "1"
INGEST_RECORD = "_ingest.json"


def ingest_key(
    ids: Sequence[int],
    cache_dir: Path,
    *,
    catalog: Mapping[int, tuple[str | None, str | None]] | None = None,
    max_lines: int = 40,
) -> str | None:
    """Names one ingest by what it reads: the ids, the verified checksum of each raw book in the
    cache, the catalog's metadata and the splitter's version. None when a book is not in the
    cache yet (the ingest has to fetch, so it cannot be known to be unchanged)."""
    h = hashlib.sha256(json.dumps([SPLITTER_VERSION, max_lines]).encode())
    for gid in dict.fromkeys(int(i) for i in ids):
        raw = cached_file(cache_dir, f"{gid}.txt")
        if raw is None:
            return None
        rdf = cached_file(cache_dir, f"{gid}.rdf")  # fetched for books whose header lacks names
        meta = catalog.get(gid) if catalog is not None else None
        digests = [hashlib.sha256(b).hexdigest() if b else None for b in (raw, rdf)]
        h.update(json.dumps([gid, *digests, meta]).encode())
    return h.hexdigest()


def read_ingest_record(poems_dir: Path) -> dict | None:
    """What the ingest that wrote `poems_dir` recorded (its key and summary), if anything."""
    try:
        return json.loads((Path(poems_dir) / INGEST_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_ingest_record(poems_dir: Path, record: dict) -> None:
    with atomic_path(Path(poems_dir) / INGEST_RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def write_poems(table: pa.Table, poems_dir: Path) -> Path:
    """Write poems_dir/poems.parquet atomically with POEM_SCHEMA; return its path."""
    return _write_table(table, POEM_SCHEMA, Path(poems_dir) / "poems.parquet")


def write_rejects(table: pa.Table, poems_dir: Path) -> Path:
    """Write poems_dir/rejects.parquet atomically with REJECT_SCHEMA; return its path."""
    return _write_table(table, REJECT_SCHEMA, Path(poems_dir) / "rejects.parquet")


def _write_table(table: pa.Table, schema: pa.Schema, final: Path) -> Path:
    with atomic_path(final) as tmp:
        pq.write_table(table.select(schema.names).cast(schema), tmp)
    return final


def ingest_report(poems_dir: Path) -> str:
    """A per-book table of what the last ingest wrote under poems_dir: id, title, poems,
    passages, lines, reject rows and the book-level reject reason, then a total line."""
    poems_file = Path(poems_dir) / "poems.parquet"
    if not poems_file.is_file():
        raise MissingStageOutputError(f"no poems at {poems_file}: run `emoverse ingest` first")
    poems = pq.read_table(
        poems_file, columns=["gutenberg_id", "book_title", "passage_index", "n_lines"]
    ).to_pylist()
    rejects_file = Path(poems_dir) / "rejects.parquet"
    rejects = pq.read_table(rejects_file).to_pylist() if rejects_file.is_file() else []

    books: dict[int, dict] = {}

    def book(gid: int) -> dict:
        return books.setdefault(
            gid, {"title": None, "poems": 0, "passages": 0, "lines": 0, "rejects": 0, "why": ""}
        )

    for row in poems:
        b = book(row["gutenberg_id"])
        b["title"] = b["title"] or row["book_title"]
        b["poems"] += row["passage_index"] == 0
        b["passages"] += 1
        b["lines"] += row["n_lines"]
    for row in rejects:
        b = book(row["gutenberg_id"])
        b["rejects"] += 1
        if row["reason"] in BOOK_REJECTS:
            b["why"] = row["reason"]
    header = f"{'id':>8}  {'title':<40} {'poems':>6} {'passages':>8} {'lines':>7} {'rejects':>7}"
    out = [header, "-" * len(header)]
    for gid, b in books.items():
        title = (b["title"] or "-")[:40]
        out.append(
            f"{gid:>8}  {title:<40} {b['poems']:>6} {b['passages']:>8} {b['lines']:>7} "
            f"{b['rejects']:>7}" + (f"  {b['why']}" if b["why"] else "")
        )
    kept = sum(1 for b in books.values() if not b["why"])
    out.append("-" * len(header))
    total = f"{kept} of {len(books)} books"
    out.append(
        f"{'total':>8}  {total:<40} {sum(b['poems'] for b in books.values()):>6} "
        f"{len(poems):>8} {sum(b['lines'] for b in books.values()):>7} {len(rejects):>7}"
    )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Catalog and RDF metadata
# --------------------------------------------------------------------------------------------

# A subject that says the book is verse ("English poetry", "Sonnets, English", "Ballads,
# Scots -- Texts"), unless the book is about verse ("Poetry -- History and criticism").
_POETRY_SUBJECT = re.compile(
    r"\b(?:poetry|poems|sonnets|ballads|verse|verses|epigrams|limericks|hymns|odes)\b", re.I
)
_ABOUT_POETRY = re.compile(r"criticism|study and teaching|versification", re.I)
# Books filed under verse and a prose or stage genre are mostly prose (Riley's stories, Holmes's
# Breakfast-Table talks) or plays, whose speeches would read as poems.
_PROSE_SUBJECT = re.compile(
    r"\b(?:fiction|short stories|stories|essays|drama|tragedies|comedies)\b", re.I
)


def _catalog_rows(catalog_csv: Path) -> Iterable[dict[str, str]]:
    # Titles hold newlines inside quoted fields: newline="" lets csv see them.
    with Path(catalog_csv).open(newline="", encoding="utf-8-sig") as f:
        yield from csv.DictReader(f)


def is_poetry_entry(entry: Mapping[str, str], language: str = "en") -> bool:
    """One pg_catalog.csv row: a text in `language` alone, with a subject that says it is verse
    and none that names a prose or stage genre. (The "Poetry" bookshelves also hold books
    about poets, and LoCC only splits literature by nation, PR English, PS American, not by
    genre: on the shared catalog neither adds a poetry book that the subjects miss.)"""
    if entry.get("Type", "Text") != "Text":
        return False
    if [lang.strip() for lang in entry.get("Language", "").split(";")] != [language]:
        return False
    subjects = [s for s in entry.get("Subjects", "").split(";") if s.strip()]
    if any(_PROSE_SUBJECT.search(s) for s in subjects):
        return False
    return any(_POETRY_SUBJECT.search(s) and not _ABOUT_POETRY.search(s) for s in subjects)


def poetry_ids_from_catalog(catalog_csv: Path, *, language: str = "en") -> list[int]:
    """The ids of the poetry books in a Gutenberg catalog CSV (pg_catalog.csv format), in
    ascending order."""
    ids = {
        int(entry["Text#"])
        for entry in _catalog_rows(catalog_csv)
        if entry.get("Text#", "").strip().isdigit() and is_poetry_entry(entry, language)
    }
    return sorted(ids)


_NAME_NOISE = re.compile(
    r"^(?:-?\d|\d+\??\s*(?:BCE|CE)|active|approximately|fl\.|ca\.|\d+th century)", re.I
)


def display_name(name: str) -> str | None:
    """'Shakespeare, William, 1564-1616' -> 'William Shakespeare'; 'Service, Robert W.
    (Robert William)' -> 'Robert W. Service'; 'Virgil, 70 BCE-19 BCE' -> 'Virgil'."""
    name = re.sub(r"\[[^\]]*\]|\([^)]*\)", "", name)
    parts = [p.strip() for p in name.split(",") if p.strip() and not _NAME_NOISE.match(p.strip())]
    if not parts:
        return None
    if len(parts) >= 2:
        # 'Macaulay, Thomas Babington Macaulay, Baron': the surname is already there.
        first = parts[1] if parts[1].endswith(parts[0]) else f"{parts[1]} {parts[0]}"
        return _squash(first)
    return _squash(parts[0])


def _catalog_author(authors: str) -> str | None:
    """The authors of a catalog row: those without a role ([Editor], [Translator]) if any."""
    entries = [a.strip() for a in authors.split(";") if a.strip()]
    own = [a for a in entries if "[" not in a] or entries[:1]
    names = [n for n in (display_name(a) for a in own) if n]
    return " and ".join(names) or None


def catalog_metadata(catalog_csv: Path) -> dict[int, tuple[str | None, str | None]]:
    """id -> (title, author) for every row of a Gutenberg catalog CSV; a subtitle on its own
    line is joined with ': '."""
    out: dict[int, tuple[str | None, str | None]] = {}
    for entry in _catalog_rows(catalog_csv):
        if not entry.get("Text#", "").strip().isdigit():
            continue
        lines = [s.strip() for s in entry.get("Title", "").splitlines() if s.strip()]
        title = _squash(": ".join(lines))
        out[int(entry["Text#"])] = (title, _catalog_author(entry.get("Authors", "")))
    return out


_RDF_TITLE = re.compile(r"<dcterms:title>(.*?)</dcterms:title>", re.S)
_RDF_CREATOR = re.compile(r"<dcterms:creator>.*?<pgterms:name>(.*?)</pgterms:name>", re.S)


def parse_rdf(rdf: bytes) -> tuple[str | None, str | None]:
    """(title, author) from a book's pg<id>.rdf record; None where absent. (A regex, not an XML
    parser: two fields are all that is needed, and nothing in the file is trusted further.)"""
    text = rdf.decode("utf-8", errors="replace")
    title = author = None
    if m := _RDF_TITLE.search(text):
        lines = [s.strip() for s in html.unescape(m.group(1)).splitlines() if s.strip()]
        title = _squash(": ".join(lines))
    if m := _RDF_CREATOR.search(text):
        author = display_name(html.unescape(m.group(1)))
    return title, author
