"""Titles, authors and poetry ids from the Gutenberg catalog CSV and the per-book RDF records."""

import csv
import html
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from emoverse.corpus.text import squash
from emoverse.errors import EmoverseError

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
    try:
        with Path(catalog_csv).open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "Text#" not in reader.fieldnames:
                raise EmoverseError(
                    f"catalog {catalog_csv} is not a Gutenberg catalog CSV (no Text# column)"
                )
            yield from reader
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EmoverseError(
            f"catalog {catalog_csv} is not a UTF-8 CSV file ({str(exc)[:120]})"
        ) from None


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
        return squash(first)
    return squash(parts[0])


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
        title = squash(": ".join(lines))
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
        title = squash(": ".join(lines))
    if m := _RDF_CREATOR.search(text):
        author = display_name(html.unescape(m.group(1)))
    return title, author
