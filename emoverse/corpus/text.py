"""A raw book to clean text: decoding, Gutenberg's header and footer, title and author."""

import codecs
import re

from emoverse.corpus.reasons import ENCODING, BookRejectedError

# Control characters other than \n and \t: form feeds between pages, stray escapes, a BOM
# repeated where files were concatenated.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufeff]")


def decode_book(raw: bytes) -> str:
    """Clean text of a book (see `decode_book_counted`)."""
    return decode_book_counted(raw)[0]


def decode_book_counted(raw: bytes) -> tuple[str, int]:
    """Clean text of a book and how many invalid UTF-8 sequences in it were
    replaced with U+FFFD.

    Decided per book: UTF-8 (BOM dropped) when it is UTF-8, bad bytes and all, that is when
    its valid multi-byte characters outnumber its invalid bytes; UTF-16 with a BOM; else
    cp1252 (a superset of Latin-1's printable range) for books that are cp1252 as a whole.
    One stray byte in a UTF-8 book must not turn every curly quote into "â€™".
    Line ends are normalised to \\n, control characters dropped.

    Raises BookRejectedError(ENCODING) for what is not text at all (NUL bytes: a binary or
    mis-declared file) or is mostly undecodable.
    """
    replaced = 0
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = raw.decode("utf-16", errors="replace")
    else:
        if raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            lenient = raw.decode("utf-8", errors="replace")
            already = raw.count("\ufffd".encode())  # U+FFFD written in the file itself
            replaced = lenient.count("\ufffd") - already
            valid_multibyte = sum(1 for c in lenient if c > "\x7f") - replaced - already
            if valid_multibyte > replaced:
                text = lenient
            else:
                # Pre-Unicode Gutenberg files are Latin-1/cp1252; cp1252 is a superset for
                # the printable range, and "replace" covers its five undefined bytes.
                replaced = 0
                text = raw.decode("cp1252", errors="replace")
    if "\x00" in text:
        raise BookRejectedError(ENCODING, "NUL bytes: not a plain-text file")
    bad = text.count("\ufffd")
    if bad > max(20, len(text) // 200):
        raise BookRejectedError(ENCODING, f"{bad} undecodable characters")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # A form feed is a page break: keep it as a line break so that the lines around it stay apart.
    return _CONTROL.sub(lambda m: "\n" if m.group() == "\x0c" else "", text), replaced


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
    return (squash(title), squash(author))


def squash(value: str | None) -> str | None:
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


def normalize_for_dedup(text: str) -> str:
    """Lowercase letters and digits only, single spaces: the same poem from two editions
    (different quotes, dashes, indents, line ends) normalises to the same string."""
    return " ".join(re.findall(r"[^\W_]+", text.lower()))
