"""Fetching and parsing Project Gutenberg books, on the real shared mirror (no mocks)."""

import hashlib
import re
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emoverse.errors import BookNotFoundError, MirrorNotFoundError
from emoverse.gutenberg import (
    book_path,
    book_to_rows,
    check_mirror,
    decode_book,
    dedupe_rows,
    fetch_book,
    ingest_books,
    normalize_for_dedup,
    parse_metadata,
    split_poems,
    strip_boilerplate,
    write_poems,
)
from emoverse.schema import POEM_SCHEMA

GUTENBERG_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "gutenberg"

MISSING_ID = 99999999
SMALL_PRINT_BOOKS = [1543, 2383, 3039]  # pre-2001 header; 3039 writes "*END THE SMALL PRINT"


def raw_book(gutenberg_id: int) -> bytes:
    return (GUTENBERG_DIR / book_path(gutenberg_id)).read_bytes()


@pytest.fixture(scope="module")
def rows_by_book() -> dict[int, list[dict]]:
    return {i: book_to_rows(i, raw_book(i)) for i in (1041, 574, 1065, 12242)}


def poems(rows: list[dict]) -> list[dict]:
    """First passages only: one per poem."""
    return [r for r in rows if r["passage_index"] == 0]


# --- decoding, metadata, boilerplate ---------------------------------------------------------


def test_book_path_is_the_sites_layout():
    assert book_path(1065) == "cache/epub/1065/pg1065.txt"


def test_decode_strips_bom_and_normalises_line_ends():
    raw = "\ufeffTitle: Café\r\n\r\nline one\rline two\n".encode()
    assert decode_book(raw) == "Title: Café\n\nline one\nline two\n"


def test_decode_falls_back_to_cp1252():
    assert decode_book(b"caf\xe9 \x93quoted\x94\r\n") == "café “quoted”\n"


def test_metadata_from_header_lines_and_from_old_first_line():
    assert parse_metadata(decode_book(raw_book(1041))) == (
        "Shakespeare's Sonnets",
        "William Shakespeare",
    )
    # Pre-2001 files have no Title:/Author: lines, only "Project Gutenberg's Etext of X, by Y".
    assert parse_metadata(decode_book(raw_book(390))) == ("A Lute of Jade", "L. Cranmer-Byng")
    assert parse_metadata("Just some verse\nwith no header\n") == (None, None)


def test_strip_boilerplate_keeps_only_the_body():
    body = strip_boilerplate(decode_book(raw_book(1041)))
    assert body.startswith("THE SONNETS")  # the "Produced by" paragraph is gone
    assert body.rstrip().endswith("Love's fire heats water, water cools not love.")
    assert "Gutenberg" not in body and "Produced by" not in body


@pytest.mark.parametrize("gutenberg_id", SMALL_PRINT_BOOKS)
def test_small_print_books_lose_their_header_and_yield_poems(gutenberg_id):
    text = decode_book(raw_book(gutenberg_id))
    assert "*** START OF" not in text  # really an old-style file
    body = strip_boilerplate(text)
    assert "SMALL PRINT" not in body.upper() and "GUTENBERG" not in body.upper()
    assert "etext" not in body[:500].lower()  # the "This etext was prepared by" credit too
    passages = split_poems(body)
    assert len(passages) >= 10
    assert not any("gutenberg" in p.text.lower() for p in passages)


# --- splitting on the reference books --------------------------------------------------------


def test_shakespeare_sonnets_are_154_poems(rows_by_book):
    rows = rows_by_book[1041]
    assert len(rows) == len(poems(rows)) == 154  # no sonnet is long enough to be cut
    assert rows[0]["poem_title"] == "I" and rows[-1]["poem_title"] == "CLIV"
    assert rows[0]["text"].split("\n")[0] == "From fairest creatures we desire increase,"
    # All 14 lines, except the 15-line XCIX and the 12-line CXXVI.
    odd = {r["poem_title"]: r["n_lines"] for r in rows if r["n_lines"] != 14}
    assert odd == {"XCIX": 15, "CXXVI": 12}
    assert (rows[0]["book_title"], rows[0]["author"]) == (
        "Shakespeare's Sonnets",
        "William Shakespeare",
    )


def test_blake_titled_poems_are_separate(rows_by_book):
    rows = rows_by_book[574]
    assert 50 <= len(poems(rows)) <= 52
    shepherd = [r for r in rows if r["poem_title"] == "THE SHEPHERD"]
    assert len(shepherd) == 1
    assert shepherd[0]["text"].startswith("How sweet is the Shepherd's sweet lot!\n")
    assert shepherd[0]["n_lines"] == 8
    titles = {r["poem_title"] for r in rows}
    assert {"THE LAMB", "THE TYGER", "LONDON", "A POISON TREE"} <= titles
    # Blake's INTRODUCTION is verse, so it is kept although the heading usually means prose.
    intro = next(r for r in rows if r["poem_title"] == "INTRODUCTION")
    assert intro["text"].startswith("Piping down the valleys wild,")


def test_the_raven_is_one_poem_cut_at_stanzas(rows_by_book):
    rows = rows_by_book[1065]
    assert [r["passage_index"] for r in rows] == [0, 1, 2]
    assert len({r["poem_title"] for r in rows}) == 1
    assert sum(r["n_lines"] for r in rows) == 108  # 18 stanzas of 6 lines
    assert all(r["n_lines"] % 6 == 0 for r in rows)  # cuts fall between stanzas
    assert rows[0]["text"].startswith("Once upon a midnight dreary, while I pondered,")
    assert rows[-1]["text"].rstrip().endswith("Shall be lifted--nevermore!")
    # One stanza per passage when max_lines is below two stanzas.
    small = book_to_rows(1065, raw_book(1065), max_lines=10)
    assert [r["n_lines"] for r in small] == [6] * 18


def test_dickinson_gives_hundreds_of_poems_and_no_preface(rows_by_book):
    rows = rows_by_book[12242]
    assert 440 <= len(poems(rows)) <= 455
    text = "\n".join(r["text"] for r in rows)
    # Sentences from the editor's preface and the transcriber's note.
    assert "Poetry of the Portfolio" not in text and "well documented" not in text
    assert "Success is counted sweetest" in text


@pytest.mark.parametrize("gutenberg_id", [1041, 574, 1065, 12242])
def test_passages_are_clean_verse(rows_by_book, gutenberg_id):
    for row in rows_by_book[gutenberg_id]:
        text = row["text"]
        assert "project gutenberg" not in text.lower()
        lines = text.split("\n")
        assert max(len(line) for line in lines) <= 80  # no wrapped prose paragraphs
        assert 2 <= row["n_lines"] <= 40
        assert row["n_lines"] == sum(1 for line in lines if line.strip())
        assert all(line == line.rstrip() for line in lines)
        assert "\n\n\n" not in text and text == text.strip("\n")
        assert any(not line.startswith(" ") for line in lines if line)  # indent removed


def test_poem_ids_are_positional_and_stable(rows_by_book):
    again = book_to_rows(1041, raw_book(1041))
    assert [r["poem_id"] for r in again] == [r["poem_id"] for r in rows_by_book[1041]]
    assert [r["poem_id"] for r in again[:2]] == ["1041-00000", "1041-00001"]
    assert again[0]["source_sha256"] == hashlib.sha256(raw_book(1041)).hexdigest()
    pa.Table.from_pylist(again, schema=POEM_SCHEMA)  # rows fit the declared schema


def test_split_drops_prose_sections_and_cuts_long_stanzas():
    prose = " ".join(["the preface runs on and on in long wrapped lines of prose"] * 8)
    wrapped = "\n".join(re.findall(r".{1,70}(?:\s|$)", prose))
    stanza = "\n".join(f"Line {i} of a stanza that never breaks," for i in range(25))
    body = (
        f"PREFACE\n\n{wrapped}\n\n\nTHE SHEPHERD\n\n  One line\n  And two\n\n\nLONG ONE\n\n{stanza}"
    )
    passages = split_poems(body, max_lines=10)
    assert passages[0].poem_title == "THE SHEPHERD"
    assert passages[0].text == "One line\nAnd two"  # common indent removed
    assert [(p.poem_title, p.passage_index) for p in passages[1:]] == [
        ("LONG ONE", 0),
        ("LONG ONE", 1),
        ("LONG ONE", 2),
    ]
    assert [p.text.count("\n") + 1 for p in passages[1:]] == [10, 10, 5]
    assert "preface" not in " ".join(p.text for p in passages)


# --- dedup -----------------------------------------------------------------------------------


def test_normalize_for_dedup():
    assert normalize_for_dedup("  The RAVEN!\n--Quoth’d,  he") == "the raven quoth d he"


def test_dedupe_rows_keeps_the_first_occurrence():
    rows = [
        {"poem_id": "a", "text": "Once upon a midnight"},
        {"poem_id": "b", "text": "ONCE upon a  midnight!"},
        {"poem_id": "c", "text": "Another poem"},
    ]
    assert [r["poem_id"] for r in dedupe_rows(rows)] == ["a", "c"]


def test_ingest_dedupes_overlapping_books():
    calls: list[tuple[int, int]] = []
    table = ingest_books(
        str(GUTENBERG_DIR), [1065, 1062], on_book=lambda i, n: calls.append((i, n))
    )
    keys = [normalize_for_dedup(t) for t in table.column("text").to_pylist()]
    assert len(keys) == len(set(keys))
    # 1062's only poem is The Raven, already taken from 1065.
    assert calls == [(1065, 3), (1062, 0)]
    assert table.schema == POEM_SCHEMA


# --- fetching --------------------------------------------------------------------------------


def test_fetch_over_http_returns_the_file_bytes(gutenberg_server):
    assert fetch_book(gutenberg_server, 1065) == raw_book(1065)


def test_fetch_unknown_id_over_http(gutenberg_server):
    with pytest.raises(BookNotFoundError, match=str(MISSING_ID)):
        fetch_book(gutenberg_server, MISSING_ID)


def test_ingest_names_every_missing_id_before_parsing(gutenberg_server):
    calls: list[tuple[int, int]] = []
    with pytest.raises(BookNotFoundError) as info:
        ingest_books(
            gutenberg_server,
            [1065, MISSING_ID, MISSING_ID + 1],
            on_book=lambda *args: calls.append(args),
        )
    assert str(MISSING_ID) in str(info.value) and str(MISSING_ID + 1) in str(info.value)
    assert "1065" not in str(info.value)
    assert calls == []  # nothing was parsed


def test_ingest_over_http(gutenberg_server):
    table = ingest_books(gutenberg_server, [1065])
    assert table.num_rows == 3 and table.column("gutenberg_id").to_pylist() == [1065] * 3


def test_unreachable_url_is_a_missing_mirror():
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(MirrorNotFoundError, match=re.escape(url)):
        fetch_book(url, 1065, timeout=5)
    with pytest.raises(MirrorNotFoundError):
        ingest_books(url, [1065])


def test_local_folder_mirror():
    assert fetch_book(str(GUTENBERG_DIR), 1065) == raw_book(1065)
    assert fetch_book(GUTENBERG_DIR.as_uri(), 1065) == raw_book(1065)
    check_mirror(str(GUTENBERG_DIR))
    with pytest.raises(BookNotFoundError, match=str(MISSING_ID)):
        fetch_book(str(GUTENBERG_DIR), MISSING_ID)


def test_missing_local_folder_is_a_missing_mirror(tmp_path):
    missing = tmp_path / "no-such-mirror"
    for call in (
        lambda: check_mirror(str(missing)),
        lambda: fetch_book(str(missing), 1065),
        lambda: ingest_books(str(missing), [1065]),
    ):
        with pytest.raises(MirrorNotFoundError, match=re.escape(str(missing))):
            call()


# --- writing ---------------------------------------------------------------------------------


def test_write_poems_is_readable_with_the_declared_schema(rows_by_book, tmp_path):
    table = pa.Table.from_pylist(rows_by_book[1041], schema=POEM_SCHEMA)
    path = write_poems(table, tmp_path / "poems")
    assert path == tmp_path / "poems" / "poems.parquet"
    back = pq.read_table(path)
    assert back.schema.equals(POEM_SCHEMA)
    assert back.num_rows == 154
    assert sorted(p.name for p in path.parent.iterdir()) == ["poems.parquet"]  # no temp left
