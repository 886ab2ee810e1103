"""Cutting a book's text into poems.

Splitting is a heuristic over "blocks" (runs of non-blank lines): headings start poems, blank
runs of 3+ lines separate them, and each section is kept or dropped by its shape (verse vs
prose), because front and back matter is too varied to recognise by its headings alone.
"""

import re
import textwrap
from dataclasses import dataclass

from emoverse.corpus.reasons import MATTER_DROPPED, MOSTLY_PROSE
from emoverse.corpus.text import normalize_for_dedup


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
class Drop:
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
    return split_with_drops(body, max_lines)[0]


def split_with_drops(body: str, max_lines: int) -> tuple[list[PoemPassage], list[Drop]]:
    """split_poems, and what it dropped (for the rejects table)."""
    if max_lines < 1:
        raise ValueError("max_lines must be at least 1")
    poems: list[tuple[str | None, list[list[str]]]] = []
    drops: list[Drop] = []
    for section in _sections(_blocks(body)):
        title = _clean_title(section.title)
        n_lines = sum(len(b.lines) for b in section.blocks)
        if section.kind == "skip":
            if n_lines:
                drops.append(Drop(MATTER_DROPPED, title, n_lines))
            continue
        verse = [b for b in section.blocks if b.verse]
        prose_lines = sum(len(b.lines) for b in section.blocks if b.prose)
        verse_lines = sum(len(b.lines) for b in verse)
        # Decide by shape, not heading: a prose-dominated section is front/back matter.
        if prose_lines > verse_lines:
            # A titled section with a real stanza may be a poem under a long prose note.
            if title and verse_lines >= 4 and not _MAYBE_SKIP.match(title):
                detail = f"{verse_lines} verse lines under {prose_lines} lines of prose"
                drops.append(Drop(MOSTLY_PROSE, title, n_lines, detail))
            else:
                drops.append(Drop(MATTER_DROPPED, title, n_lines))
            continue
        stanzas = [b.lines for b in verse]
        if verse_lines < 2 or max(len(s) for s in stanzas) < 2 or _is_title_page(stanzas):
            if n_lines:
                drops.append(Drop(MATTER_DROPPED, title, n_lines))
            continue
        poems.append((title, stanzas))
    out: list[PoemPassage] = []
    kept = _drop_first_line_entries(poems)
    for title, stanzas in poems:
        if not any(stanzas is k for _, k in kept):
            drops.append(Drop(MATTER_DROPPED, title, sum(len(s) for s in stanzas)))
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
