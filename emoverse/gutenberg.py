"""Fetch Project Gutenberg books and cut them into poems (pure logic; the Prefect layer wraps it).

A mirror is either an http(s) URL with the site's `cache/epub/<id>/pg<id>.txt` layout (the public
site, or a loopback server over a local copy) or a local folder with that same layout.

Splitting is a heuristic over "blocks" (runs of non-blank lines): headings start poems, blank
runs of 3+ lines separate them, and each section is kept or dropped by its shape (verse vs
prose), because front and back matter is too varied to recognise by its headings alone.
"""

import hashlib
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from emoverse import __version__
from emoverse.atomic import atomic_path
from emoverse.errors import BookNotFoundError, MirrorNotFoundError
from emoverse.schema import POEM_SCHEMA

GUTENBERG_URL = "https://www.gutenberg.org"  # the public site, production default
USER_AGENT = "emoverse/" + ".".join(__version__.split(".")[:2])  # "emoverse/0.1"

# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


def book_path(gutenberg_id: int) -> str:
    """Path of a book's plain-text file relative to the mirror root (the site's own layout)."""
    return f"cache/epub/{int(gutenberg_id)}/pg{int(gutenberg_id)}.txt"


def _is_url(mirror: str) -> bool:
    return mirror.startswith(("http://", "https://"))


def _local_folder(mirror: str) -> Path:
    """A local mirror given as a path or a file:// URL."""
    if mirror.startswith("file:"):
        return Path(unquote(urlparse(mirror).path))
    return Path(mirror).expanduser()


def _new_client(timeout: float = 30.0) -> httpx.Client:
    # Redirects are followed because the public site redirects between hosts and schemes.
    return httpx.Client(timeout=timeout, follow_redirects=True, headers={"User-Agent": USER_AGENT})


def check_mirror(mirror: str) -> None:
    """Fail early on a local mirror folder that does not exist; URLs are only checked on use
    (a network probe here would cost a round trip for every run)."""
    if _is_url(mirror):
        return
    folder = _local_folder(mirror)
    if not folder.is_dir():
        raise MirrorNotFoundError(f"Gutenberg mirror folder {folder} does not exist")


def fetch_book(
    mirror: str,
    gutenberg_id: int,
    *,
    client: httpx.Client | None = None,
    timeout: float = 30.0,
) -> bytes:
    """The raw bytes of one book from an http(s) mirror or a local folder mirror.

    Raises MirrorNotFoundError when the mirror itself is missing or unreachable (connection
    refused, DNS failure) and BookNotFoundError when the mirror lacks the book. Other HTTP
    errors propagate as httpx exceptions. No retries here.
    """
    rel = book_path(gutenberg_id)
    not_found = f"Gutenberg book {gutenberg_id} not found at {mirror}"
    if not _is_url(mirror):
        check_mirror(mirror)
        try:
            return (_local_folder(mirror) / rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise BookNotFoundError(not_found) from None

    url = f"{mirror.rstrip('/')}/{rel}"
    own_client = client is None
    http = client if client is not None else _new_client(timeout)
    try:
        response = http.get(url, timeout=timeout)
    except httpx.ConnectError as exc:  # refused, DNS failure, unreachable host
        raise MirrorNotFoundError(f"Gutenberg mirror {mirror} cannot be reached: {exc}") from exc
    finally:
        if own_client:
            http.close()
    if response.status_code in (404, 410):
        raise BookNotFoundError(not_found)
    response.raise_for_status()
    return response.content


# --------------------------------------------------------------------------------------------
# Decoding and boilerplate
# --------------------------------------------------------------------------------------------


def decode_book(raw: bytes) -> str:
    """Text of a book: UTF-8 (BOM dropped), else cp1252; line ends normalised to \\n."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Pre-Unicode Gutenberg files are Latin-1/cp1252; cp1252 is a superset for the
        # printable range, and "replace" covers its five undefined bytes.
        text = raw.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


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

    @property
    def prose(self) -> bool:
        if self._prose is None:
            self._prose = _is_prose(self)
        return self._prose

    @property
    def verse(self) -> bool:
        if self._verse is None:
            self._verse = not (self.prose or _is_junk(self) or _is_list(self))
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
    r"^(?:table of )?(?:contents|index|notes?\b|footnotes|glossary|vocabulary|transcriber"
    r"|errata|list of|illustrations|bibliography|memoir|biograph|appendix|acknowledg"
    r"|advertisement|editor'?s? note|the end\b|finis\b)",
    re.IGNORECASE,
)
# Sections that are usually prose but may be a poem (Blake's "INTRODUCTION"): decided by shape.
_MAYBE_SKIP = re.compile(r"^(?:preface|introduction|introductory|foreword|prefatory)", re.I)
# A prose summary under a book heading ('BOOK I' / 'THE ARGUMENT.'): not the poem's title.
_ARGUMENT = re.compile(r"^(?:the )?argument\b", re.IGNORECASE)
_SEPARATOR = re.compile(r"^[\s*.\-_=~#+·•]*$")
_PAGE_REF = re.compile(r"(?:\s{2,}|\.\s*\.\s*|\s)(?:\d{1,4}|[ivxlc]{1,7})\.?\s*$")
_ENTRY_START = re.compile(rf"^\s*(?:{_ROMAN}|\d{{1,4}})\.?\s{{2,}}\S")
_LINE_NUMBER = re.compile(r"(\S)\s{4,}_?\d{1,4}_?$")  # "...Hofgarten,          10"
# Page marks: "{13}", "[Pg 13]".
_PAGE_MARK = re.compile(r"\s*(?:\{\d+\}|\[(?:Pg|Page|p\.)\s*\d+\])\s*", re.IGNORECASE)
_TITLE_END_OK = re.compile(r"[^,;:\-–—]$")


def _clean_line(line: str) -> str | None:
    """A line without page marks and margin line numbers; None for a page-mark-only line,
    which is dropped rather than left blank so that it does not split a stanza."""
    line = line.expandtabs(8).rstrip()
    if _PAGE_MARK.search(line):
        line = _PAGE_MARK.sub(" ", line).rstrip()
        if not line.strip():
            return None
    return _LINE_NUMBER.sub(r"\1", line)


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
    """Separators, editorial [notes], bylines and anything that mentions Project Gutenberg."""
    joined = " ".join(line.strip() for line in block.lines)
    if "gutenberg" in joined.lower():
        return True
    if all(_SEPARATOR.match(line) for line in block.lines):
        return True
    if joined.startswith("[") and joined.endswith("]"):
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
        has_content = any(not _is_junk(b) for b in current.blocks)
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
    return sections


def _is_title_page(stanzas: list[list[str]]) -> bool:
    """Title pages and dedications ('THE COLLECTED POEMS' / 'with a memoir by ...') that
    slipped through as short 'verse': mostly caps, Title Case or byline lines."""
    titley = verse = 0
    for stanza in stanzas:
        for line in stanza:
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


def _passages(stanzas: list[list[str]], max_lines: int) -> list[list[list[str]]]:
    """Cut a poem into passages of at most max_lines lines at stanza boundaries; a stanza
    longer than max_lines is itself cut every max_lines lines."""
    pieces: list[list[str]] = []
    for stanza in stanzas:
        pieces.extend(stanza[i : i + max_lines] for i in range(0, len(stanza), max_lines))
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
    text = "\n\n".join("\n".join(line.rstrip() for line in stanza) for stanza in stanzas)
    return textwrap.dedent(text).strip("\n")


def split_poems(body: str, *, max_lines: int = 40) -> list[PoemPassage]:
    """Split a stripped book body into poems, and long poems into passages.

    Headings (caps, numerals, 'SONNET XVIII', or a Title Case line set off before verse) and
    gaps of 3+ blank lines start poems; single blank lines are stanza breaks. Sections made
    mostly of prose (prefaces, notes), contents/index lists and editorial notes are dropped.
    A poem needs 2+ verse lines and one stanza of 2+ lines (title pages are one-liners).
    """
    if max_lines < 1:
        raise ValueError("max_lines must be at least 1")
    poems: list[tuple[str | None, list[list[str]]]] = []
    for section in _sections(_blocks(body)):
        if section.kind == "skip":
            continue
        verse = [b for b in section.blocks if b.verse]
        prose_lines = sum(len(b.lines) for b in section.blocks if b.prose)
        verse_lines = sum(len(b.lines) for b in verse)
        # Decide by shape, not heading: a prose-dominated section is front/back matter.
        if prose_lines > verse_lines:
            continue
        stanzas = [b.lines for b in verse]
        if verse_lines < 2 or max(len(s) for s in stanzas) < 2 or _is_title_page(stanzas):
            continue
        poems.append((_clean_title(section.title), stanzas))
    out: list[PoemPassage] = []
    for title, stanzas in _drop_first_line_entries(poems):
        for index, passage in enumerate(_passages(stanzas, max_lines)):
            out.append(PoemPassage(title, index, _format(passage)))
    return out


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
# Rows, dedup, ingest, write
# --------------------------------------------------------------------------------------------


def normalize_for_dedup(text: str) -> str:
    """Lowercase letters and digits only, single spaces: the same poem from two editions
    (different quotes, dashes, indents, line ends) normalises to the same string."""
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


def book_to_rows(gutenberg_id: int, raw: bytes, *, max_lines: int = 40) -> list[dict]:
    """Rows matching POEM_SCHEMA for one raw book file; poem_id is stable across runs."""
    text = decode_book(raw)
    book_title, author = parse_metadata(text)
    sha = hashlib.sha256(raw).hexdigest()
    rows = []
    for i, passage in enumerate(split_poems(strip_boilerplate(text), max_lines=max_lines)):
        rows.append(
            {
                "poem_id": f"{gutenberg_id}-{i:05d}",
                "gutenberg_id": int(gutenberg_id),
                "book_title": book_title,
                "author": author,
                "poem_title": passage.poem_title,
                "passage_index": passage.passage_index,
                "text": passage.text,
                "n_lines": sum(1 for line in passage.text.split("\n") if line.strip()),
                "n_words": len(passage.text.split()),
                "source_sha256": sha,
            }
        )
    return rows


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


def ingest_books(
    mirror: str,
    ids: Sequence[int],
    *,
    on_book: Callable[[int, int], None] | None = None,
    max_lines: int = 40,
) -> pa.Table:
    """Fetch, parse and dedupe books into a POEM_SCHEMA table.

    Every book is fetched before any is parsed so that all missing ids are reported in one
    BookNotFoundError. on_book(gutenberg_id, n_rows) runs after each book is parsed, with the
    number of rows (poems or passages) it added after dedup.
    """
    check_mirror(mirror)
    ids = list(dict.fromkeys(int(i) for i in ids))  # a repeated id would only add duplicates
    raws: dict[int, bytes] = {}
    missing: list[int] = []
    # One connection pool for all books (none needed for a local folder).
    with _new_client() if _is_url(mirror) else nullcontext() as client:
        for gid in ids:
            try:
                raws[gid] = fetch_book(mirror, gid, client=client)
            except BookNotFoundError:
                missing.append(gid)
    if missing:
        which = "book" if len(missing) == 1 else "books"
        names = ", ".join(str(m) for m in missing)
        raise BookNotFoundError(f"Gutenberg {which} {names} not found at {mirror}")
    rows: list[dict] = []
    seen: set[str] = set()
    for gid in ids:
        kept = _dedupe_into(book_to_rows(gid, raws[gid], max_lines=max_lines), seen)
        rows.extend(kept)
        if on_book is not None:
            on_book(gid, len(kept))
    return pa.Table.from_pylist(rows, schema=POEM_SCHEMA)


def write_poems(table: pa.Table, poems_dir: Path) -> Path:
    """Write poems_dir/poems.parquet atomically with POEM_SCHEMA; return its path."""
    final = Path(poems_dir) / "poems.parquet"
    table = table.select(POEM_SCHEMA.names).cast(POEM_SCHEMA)
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp)
    return final
