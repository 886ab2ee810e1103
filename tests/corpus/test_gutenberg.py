"""Fetching and parsing Project Gutenberg books, on real mirrors (no mocks): the small test
mirror, and the whole shared one for the tests marked `full_mirror`."""

import hashlib
import re
import socket
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import FULL_MIRROR, GUTENBERG_DIR

from emoverse.corpus import (
    BOOK_REJECTS,
    BYTES_REPLACED,
    DUPLICATES,
    EMPTY,
    ENCODING,
    FETCH_FAILED,
    HTML_PAGE,
    MATTER_DROPPED,
    NOT_FOUND,
    NOT_POETRY,
    REJECT_REASONS,
    BookRejectedError,
    RetryPolicy,
    book_path,
    book_paths,
    book_to_rows,
    cache_store,
    cached_file,
    catalog_metadata,
    check_mirror,
    decode_book,
    dedupe_rows,
    display_name,
    fetch_book,
    ingest,
    ingest_books,
    ingest_report,
    is_poetry_entry,
    looks_like_html,
    normalize_for_dedup,
    parse_metadata,
    parse_rdf,
    poetry_ids_from_catalog,
    split_poems,
    strip_boilerplate,
    write_poems,
    write_rejects,
)
from emoverse.corpus.rows import book_rows_and_rejects
from emoverse.corpus.text import decode_book_counted
from emoverse.errors import BookNotFoundError, MirrorNotFoundError, MissingStageOutputError
from emoverse.schema import POEM_SCHEMA, REJECT_SCHEMA

MISSING_ID = 99999999
SMALL_PRINT_BOOKS = [1543, 2383, 3039]  # pre-2001 header; 3039 writes "*END THE SMALL PRINT"


def raw_book(gutenberg_id: int, mirror: Path = GUTENBERG_DIR) -> bytes:
    return (mirror / book_path(gutenberg_id)).read_bytes()


@pytest.fixture(scope="module")
def rows_by_book(full_gutenberg_dir) -> dict[int, list[dict]]:
    return {i: book_to_rows(i, raw_book(i, FULL_MIRROR)) for i in (1041, 574, 1065, 12242)}


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


@pytest.mark.full_mirror
def test_metadata_from_header_lines_and_from_old_first_line():
    assert parse_metadata(decode_book(raw_book(1041))) == (
        "Shakespeare's Sonnets",
        "William Shakespeare",
    )
    # Pre-2001 files have no Title:/Author: lines, only "Project Gutenberg's Etext of X, by Y".
    assert parse_metadata(decode_book(raw_book(390, FULL_MIRROR))) == (
        "A Lute of Jade",
        "L. Cranmer-Byng",
    )
    assert parse_metadata("Just some verse\nwith no header\n") == (None, None)


def test_strip_boilerplate_keeps_only_the_body():
    body = strip_boilerplate(decode_book(raw_book(1041)))
    assert body.startswith("THE SONNETS")  # the "Produced by" paragraph is gone
    assert body.rstrip().endswith("Love's fire heats water, water cools not love.")
    assert "Gutenberg" not in body and "Produced by" not in body


@pytest.mark.full_mirror
@pytest.mark.parametrize("gutenberg_id", SMALL_PRINT_BOOKS)
def test_small_print_books_lose_their_header_and_yield_poems(gutenberg_id):
    text = decode_book(raw_book(gutenberg_id, FULL_MIRROR))
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
    small = book_to_rows(1065, raw_book(1065, FULL_MIRROR), max_lines=10)
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
    again = book_to_rows(1041, raw_book(1041, FULL_MIRROR))
    assert [r["poem_id"] for r in again] == [r["poem_id"] for r in rows_by_book[1041]]
    assert [r["poem_id"] for r in again[:2]] == ["1041-00000", "1041-00001"]
    assert again[0]["source_sha256"] == hashlib.sha256(raw_book(1041, FULL_MIRROR)).hexdigest()
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


def test_editorial_apparatus_is_dropped_from_verse():
    body = "\n".join(
        [
            "THE POEM",
            "",
            "1.",
            "Hath in the Ram <1> his halfe course y-run,  10",
            "And palmers[2] for to seeke strange strands; [12]",
            "",
            "2.",
            "Whose sightless speed divides this night:          15",
            "  bootless > hopelessly, without remedy",
            "Authors are partial to their wit, 'tis true",
            "",
            "NOTES:",
            "_87 Regarding cj. A.C. Bradley.)",
            "",
            "<82.5> A form of RAMPART, sanctioned by Dryden.",
            "<82.6> Medicinal herb or plant.",
            "",
            "105.34",
            "",
            "2    From slaughter of the Giaunts conquered;",
            "3    Where proud Encelade, whose wide nosethrils burn",
        ]
    )
    [poem] = split_poems(body)
    assert poem.text == (
        "Hath in the Ram his halfe course y-run,\n"
        "And palmers for to seeke strange strands;\n"
        "\n"
        "Whose sightless speed divides this night:\n"
        "  bootless > hopelessly, without remedy\n"  # one gloss among verse stays
        "Authors are partial to their wit, 'tis true\n"
        "\n"
        "From slaughter of the Giaunts conquered;\n"
        "Where proud Encelade, whose wide nosethrils burn"
    )


@pytest.mark.parametrize(
    ("gutenberg_id", "junk"),
    [
        (4798, r"^_\d|^NOTES:|^\d+\.$"),  # Shelley: keyed variant notes, stanza numbers
        (7409, r"\[\d+\]"),  # Pope: bracketed line numbers
        (1045, r"\s\d+$"),  # Venus and Adonis: margin line numbers
        (2383, r"<\d+>"),  # Chaucer: footnote markers
    ],
)
@pytest.mark.full_mirror
def test_real_books_lose_their_apparatus(gutenberg_id, junk):
    lines = [
        line
        for p in split_poems(strip_boilerplate(decode_book(raw_book(gutenberg_id, FULL_MIRROR))))
        for line in p.text.split("\n")
    ]
    assert len(lines) > 500
    assert [line for line in lines if re.search(junk, line)] == []


def test_long_stanzas_are_cut_after_a_sentence():
    lines = [f"Line {i} of blank verse runs on" + ("." if i % 7 == 6 else ",") for i in range(50)]
    passages = split_poems("BOOK I\n\n" + "\n".join(lines), max_lines=20)
    sizes = [p.text.count("\n") + 1 for p in passages]
    assert sizes == [14, 14, 14, 8]  # the last full stop in each window of 20 lines
    assert all(p.text.endswith(".") or p is passages[-1] for p in passages)


@pytest.mark.full_mirror
def test_prose_poems_and_reflowed_verse_are_not_poetry(tmp_path):
    # Gitanjali is prose poetry; Goldsmith's 3545 has its verse reflowed into paragraphs.
    result = ingest_books(str(FULL_MIRROR), [7164, 3545, 1065])
    assert result.ingested == (1065,)
    reasons = _reasons(result)
    assert reasons[7164][0] == reasons[3545][0] == NOT_POETRY
    assert re.fullmatch(r"only \d+ of \d+ lines read as verse", reasons[3545][1])


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


@pytest.mark.full_mirror
def test_ingest_dedupes_overlapping_books():
    calls: list[tuple[int, int]] = []
    result = ingest_books(str(FULL_MIRROR), [1065, 1062], on_book=lambda i, n: calls.append((i, n)))
    table = result.poems
    keys = [normalize_for_dedup(t) for t in table.column("text").to_pylist()]
    assert len(keys) == len(set(keys))
    # 1062's only poem is The Raven, already taken from 1065: a summary reject, not a book reject.
    assert calls == [(1065, 3), (1062, 0)]
    assert table.schema == POEM_SCHEMA
    assert result.ingested == (1065, 1062)
    dup = [r for r in result.rejects.to_pylist() if r["reason"] == DUPLICATES]
    assert [(r["gutenberg_id"], r["detail"]) for r in dup] == [
        (1062, "3 of 3 passages already ingested")
    ]


# --- fetching --------------------------------------------------------------------------------


def test_fetch_over_http_returns_the_file_bytes(gutenberg_server):
    assert fetch_book(gutenberg_server, 1065) == raw_book(1065)


def test_fetch_unknown_id_over_http(gutenberg_server):
    with pytest.raises(BookNotFoundError, match=str(MISSING_ID)):
        fetch_book(gutenberg_server, MISSING_ID)


def test_missing_ids_are_rejects_and_the_run_goes_on(gutenberg_server, tmp_path):
    calls: list[tuple[int, int]] = []
    result = ingest_books(
        gutenberg_server,
        [1065, MISSING_ID, MISSING_ID + 1],
        cache_dir=tmp_path / "raw",
        on_book=lambda *args: calls.append(args),
    )
    assert calls == [(1065, 3), (MISSING_ID, 0), (MISSING_ID + 1, 0)]
    assert result.ingested == (1065,) and result.poems.num_rows == 3
    missing = [r for r in result.rejects.to_pylist() if r["reason"] == NOT_FOUND]
    assert [r["gutenberg_id"] for r in missing] == [MISSING_ID, MISSING_ID + 1]
    assert "files/99999999/99999999-8.txt" in missing[0]["detail"]  # every URL pattern tried


def test_nothing_ingested_is_one_error_naming_every_id(gutenberg_server, tmp_path):
    with pytest.raises(BookNotFoundError) as info:
        ingest_books(gutenberg_server, [MISSING_ID, MISSING_ID + 1], cache_dir=tmp_path / "raw")
    assert str(info.value) == (
        f"Gutenberg books {MISSING_ID}, {MISSING_ID + 1} not found at {gutenberg_server}"
    )
    assert not (tmp_path / "raw").exists()  # nothing written


def test_ingest_over_http(gutenberg_server):
    table = ingest_books(gutenberg_server, [1065]).poems
    assert table.num_rows == 3 and table.column("gutenberg_id").to_pylist() == [1065] * 3


def test_unreachable_url_is_a_missing_mirror(tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    fast = RetryPolicy(attempts=3, base_delay=0.01)
    with pytest.raises(MirrorNotFoundError, match=re.escape(url)):
        fetch_book(url, 1065, timeout=5, retry=fast)
    with pytest.raises(MirrorNotFoundError, match="cannot be reached"):
        ingest_books(url, [1065, 1041, 574], retry=fast, cache_dir=tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


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


# --- retries, decoding, the raw cache --------------------------------------------------------


def test_retry_delays_double_up_to_the_cap_with_jitter_on_top():
    policy = RetryPolicy(attempts=8, base_delay=0.5, max_delay=8.0, jitter=0.5)
    assert [policy.delay(k, rand=lambda: 0.0) for k in range(1, 7)] == [0.5, 1, 2, 4, 8, 8]
    assert policy.delay(2, rand=lambda: 1.0) == 1.5  # at most +50 %
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_url_patterns_are_tried_in_the_sites_order():
    assert book_paths(1065) == [
        "cache/epub/1065/pg1065.txt",
        "files/1065/1065-0.txt",
        "files/1065/1065.txt",
        "files/1065/1065-8.txt",
    ]


def test_html_pages_are_told_from_books():
    assert looks_like_html(b"anything", "text/html; charset=utf-8")
    assert looks_like_html(b"\n  <!DOCTYPE HTML PUBLIC ...><html>")
    assert looks_like_html(b"<html><body>503</body></html>")
    assert not looks_like_html(raw_book(1065), "text/plain; charset=utf-8")


def test_decode_cleans_utf16_control_characters_and_rejects_binaries():
    assert decode_book("\ufeffA line\r\nB\x0cC\x07\n".encode("utf-16")) == "A line\nB\nC\n"
    for raw in (b"PK\x03\x04\x00\x00binary", "text".encode("utf-16-le")):
        with pytest.raises(BookRejectedError) as info:
            decode_book(raw)
        assert info.value.reason == ENCODING


@pytest.mark.full_mirror
def test_cp1252_originals_decode_like_their_utf8_copies():
    # 1280 was cp1252 upstream; the mirror holds it as UTF-8. Both must read the same.
    text = decode_book(raw_book(1280, FULL_MIRROR))
    assert decode_book(text.encode("cp1252", errors="strict")) == text
    assert decode_book(text.replace("\n", "\r\n").encode("utf-8-sig")) == text


def test_cache_verifies_size_and_checksum(tmp_path):
    raw = raw_book(1065)
    cache_store(tmp_path, "1065.txt", raw, "http://mirror/1065")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1065.json", "1065.txt"]
    assert cached_file(tmp_path, "1065.txt") == raw
    (tmp_path / "1065.txt").write_bytes(raw[:-100])  # truncated
    assert cached_file(tmp_path, "1065.txt") is None
    (tmp_path / "1065.txt").write_bytes(raw.replace(b"Raven", b"Crows", 1))  # same size
    assert cached_file(tmp_path, "1065.txt") is None
    (tmp_path / "1065.txt").write_bytes(raw)
    (tmp_path / "1065.json").unlink()  # data without its record: a crash mid-write
    assert cached_file(tmp_path, "1065.txt") is None


# --- faults against a real loopback server ---------------------------------------------------

# Read timeout well under the server's stall; retries without real waiting.
FAST = {"timeout": httpx.Timeout(0.5, connect=2.0), "retry": RetryPolicy(3, base_delay=0.01)}


def _reasons(result) -> dict[int, tuple[str, str]]:
    """Book-level rejects: id -> (reason, detail)."""
    return {
        r["gutenberg_id"]: (r["reason"], r["detail"])
        for r in result.rejects.to_pylist()
        if r["reason"] in BOOK_REJECTS
    }


def _no_partial_files(cache: Path) -> None:
    names = [p.name for p in cache.iterdir()]
    assert not [n for n in names if n.startswith(".") or "tmp" in n], names


@pytest.mark.full_mirror  # 1062 and 2678: the scripted mirror serves the whole one
def test_faults_become_rejects_and_a_second_run_fetches_only_what_is_missing(
    scripted_mirror, tmp_path
):
    m = scripted_mirror
    m.script(book_path(1065), "500", "ok")
    m.script(book_path(574), "stall")
    m.script(book_path(1062), "drop")
    m.script(book_path(2678), "html")
    cache = tmp_path / "raw"
    ids = [1065, 574, 1041, 1062, 2678, MISSING_ID]

    first = ingest_books(m.url, ids, cache_dir=cache, **FAST)

    assert first.ingested == (1065, 1041)
    assert first.poems.column("gutenberg_id").unique().to_pylist() == [1065, 1041]  # id order
    reasons = _reasons(first)
    assert set(reasons) == {574, 1062, 2678, MISSING_ID}
    assert reasons[574][0] == FETCH_FAILED and "ReadTimeout" in reasons[574][1]
    assert reasons[1062][0] == FETCH_FAILED and "RemoteProtocolError" in reasons[1062][1]
    assert "after 3 attempts" in reasons[1062][1]
    assert reasons[2678][0] == HTML_PAGE
    assert reasons[MISSING_ID][0] == NOT_FOUND
    assert m.count(book_path(1065)) == 2  # the 500, then the book
    assert m.count(book_path(574)) == m.count(book_path(1062)) == 3
    assert m.count(book_path(2678)) == 1  # an HTML page is final
    assert [m.count(p) for p in book_paths(MISSING_ID)] == [1, 1, 1, 1]  # 404 is final
    assert all(ua.startswith("emoverse/") for ua in m.user_agents)
    assert (first.fetched, first.from_cache) == (2, 0)
    _no_partial_files(cache)
    assert sorted(p.name for p in cache.iterdir()) == [
        "1041.json",
        "1041.txt",
        "1065.json",
        "1065.txt",
    ]

    # The mirror heals; the second run reads the good books from the cache.
    m.scripts.clear()
    m.reset_counts()
    second = ingest_books(m.url, ids, cache_dir=cache, **FAST)
    assert m.count(book_path(1065)) == m.count(book_path(1041)) == 0
    assert m.count(book_path(574)) == m.count(book_path(1062)) == m.count(book_path(2678)) == 1
    assert (second.fetched, second.from_cache) == (3, 2)
    assert m.max_in_flight <= 2  # polite by default (stalled handlers blur this in run one)
    assert second.ingested == (1065, 574, 1041, 1062, 2678)
    assert set(_reasons(second)) == {MISSING_ID}
    assert second.poems.filter(pc.equal(second.poems["gutenberg_id"], 1065)).equals(
        first.poems.filter(pc.equal(first.poems["gutenberg_id"], 1065))
    )
    _no_partial_files(cache)


def test_a_damaged_cache_entry_is_fetched_again(scripted_mirror, tmp_path):
    m, cache = scripted_mirror, tmp_path / "raw"
    ingest_books(m.url, [1065, 1041], cache_dir=cache, **FAST)
    (cache / "1065.txt").write_bytes(raw_book(1065)[:5000])  # truncated behind our back
    m.reset_counts()
    again = ingest_books(m.url, [1065, 1041], cache_dir=cache, **FAST)
    assert (again.fetched, again.from_cache) == (1, 1)
    assert m.count(book_path(1065)) == 1 and m.count(book_path(1041)) == 0
    assert cached_file(cache, "1065.txt") == raw_book(1065)


def test_fallback_url_patterns_and_final_client_errors(scripted_mirror, tmp_path):
    m = scripted_mirror
    # A book only under files/<id>/<id>-8.txt, in Latin-1 with CRLF, as old uploads are.
    latin1 = raw_book(1065).decode("utf-8").encode("latin-1", errors="replace")
    m.extra["files/424242/424242-8.txt"] = latin1.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert fetch_book(m.url, 424242, **FAST) == m.extra["files/424242/424242-8.txt"]
    assert [m.count(p) for p in book_paths(424242)] == [1, 1, 1, 1]
    m.script(book_path(1041), "403")
    with pytest.raises(BookRejectedError, match="HTTP 403") as info:
        fetch_book(m.url, 1041, **FAST)
    assert info.value.reason == FETCH_FAILED and m.count(book_path(1041)) == 1  # not retried
    rows = ingest_books(m.url, [424242], cache_dir=tmp_path, **FAST).poems.to_pylist()
    assert [r["n_lines"] for r in rows] == [36, 36, 36]


def test_a_run_where_every_book_fails_names_each_reason(scripted_mirror, tmp_path):
    m = scripted_mirror
    m.script(book_path(1065), "html")
    with pytest.raises(BookRejectedError) as info:
        ingest_books(m.url, [1065, MISSING_ID], cache_dir=tmp_path / "raw", **FAST)
    message = str(info.value)
    assert f"1065: {HTML_PAGE}" in message and f"{MISSING_ID}: {NOT_FOUND}" in message
    assert "\n" not in message  # one line for the CLI
    assert not (tmp_path / "raw").exists()


# --- rejects, report -------------------------------------------------------------------------


def test_book_level_rejects_for_empty_and_prose_books(tmp_path):
    mirror = tmp_path / "mirror"
    header = "Title: T\nAuthor: A\n\n*** START OF THE PROJECT GUTENBERG EBOOK T ***\n"
    footer = "*** END OF THE PROJECT GUTENBERG EBOOK T ***\n"
    prose = " ".join(["a plain sentence of prose that runs on and on"] * 40)
    paragraph = "\n".join(re.findall(r".{1,70}(?:\s|$)", prose))
    books = {1: header + "\n\n" + footer, 2: header + (paragraph + "\n\n") * 5 + footer}
    for gid, text in books.items():
        path = mirror / book_path(gid)
        path.parent.mkdir(parents=True)
        path.write_text(text)
    with pytest.raises(BookRejectedError) as info:
        ingest_books(str(mirror), [1, 2])
    assert f"1: {EMPTY}" in str(info.value) and f"2: {NOT_POETRY}" in str(info.value)


@pytest.mark.full_mirror
def test_rejects_table_and_report(tmp_path):
    result = ingest_books(str(FULL_MIRROR), [12242, 2678, 1065, MISSING_ID])
    rejects = result.rejects
    assert rejects.schema == REJECT_SCHEMA
    assert set(rejects.column("reason").to_pylist()) <= set(REJECT_REASONS)
    by_book = {(r["gutenberg_id"], r["reason"]): r["detail"] for r in rejects.to_pylist()}
    assert (MISSING_ID, NOT_FOUND) in by_book
    assert (2678, DUPLICATES) in by_book  # Series One is inside the three-series book
    assert re.fullmatch(r"\d+ blocks, \d+ lines", by_book[(12242, MATTER_DROPPED)])

    poems_dir = tmp_path / "poems"
    with pytest.raises(MissingStageOutputError):
        ingest_report(poems_dir)
    write_poems(result.poems, poems_dir)
    path = write_rejects(rejects, poems_dir)
    assert pq.read_table(path).schema.equals(REJECT_SCHEMA)
    assert sorted(p.name for p in poems_dir.iterdir()) == ["poems.parquet", "rejects.parquet"]

    report = ingest_report(poems_dir).splitlines()
    assert report[0].split() == ["id", "title", "poems", "passages", "lines", "rejects"]
    raven = next(line for line in report if line.split()[0] == "1065")
    assert "The Raven" in raven and raven.split()[-4:-1] == ["1", "3", "108"]
    missing = next(line for line in report if line.split()[0] == str(MISSING_ID))
    assert missing.rstrip().endswith(NOT_FOUND)
    assert report[-1].split()[:5] == ["total", "3", "of", "4", "books"]
    assert int(report[-1].split()[-2]) == sum(result.poems.column("n_lines").to_pylist())


# --- catalog and RDF metadata ----------------------------------------------------------------


CATALOG = GUTENBERG_DIR / "pg_catalog.csv"


def test_catalog_selects_the_mirrors_poetry_books():
    manifest = {
        int(line.split("\t")[0])
        for line in (GUTENBERG_DIR / "MANIFEST.tsv").read_text().splitlines()[1:]
    }
    expected = {i for i in manifest if i <= 7702}  # the catalog stops at #7702
    selected = set(poetry_ids_from_catalog(CATALOG))
    assert expected <= selected  # every poetry book of the mirror
    assert len(selected) < 3 * len(expected)  # others are poetry books the mirror lacks
    assert {1, 1513, 2137}.isdisjoint(selected)  # a declaration, Romeo and Juliet, a tragedy


def test_catalog_rules_on_single_rows():
    poetry = {"Type": "Text", "Language": "en", "Subjects": "English poetry", "Bookshelves": ""}
    assert is_poetry_entry(poetry)
    assert not is_poetry_entry({**poetry, "Language": "de"})
    assert not is_poetry_entry({**poetry, "Language": "de; en"})
    assert not is_poetry_entry({**poetry, "Type": "Sound"})
    assert not is_poetry_entry({**poetry, "Subjects": "Poetry -- History and criticism"})
    assert not is_poetry_entry({**poetry, "Subjects": "Poetry; Short stories"})
    assert not is_poetry_entry({**poetry, "Subjects": "Novels", "Bookshelves": "Poetry"})


def test_catalog_and_rdf_metadata():
    meta = catalog_metadata(CATALOG)
    assert meta[1041] == ("Shakespeare's Sonnets", "William Shakespeare")
    assert meta[1165] == (  # a title with its subtitle on a second line; an editor
        "The Little Book of Modern Verse: A Selection from the Work of Contemporaneous "
        "American Poets",
        "Jessie Belle Rittenhouse",
    )
    assert display_name("Service, Robert W. (Robert William), 1874-1958") == "Robert W. Service"
    assert display_name("Virgil, 70 BCE-19 BCE") == "Virgil"
    assert display_name("Macaulay, Thomas Babington Macaulay, Baron") == (
        "Thomas Babington Macaulay"
    )
    rdf = (GUTENBERG_DIR / "cache/epub/579/pg579.rdf").read_bytes()
    assert parse_rdf(rdf) == ("The Poems of Sidney Lanier", "Sidney Lanier")


def test_title_and_author_from_catalog_else_header_else_rdf(gutenberg_server, tmp_path):
    # 579's old header has a title but no author: the RDF record fills it in (and is cached).
    result = ingest_books(gutenberg_server, [579, 1065], cache_dir=tmp_path)
    first = {r["gutenberg_id"]: (r["book_title"], r["author"]) for r in result.poems.to_pylist()}
    assert first[579] == ("The Poems of Sidney Lanier", "Sidney Lanier")
    assert first[1065] == ("The Raven", "Edgar Allan Poe")
    assert cached_file(tmp_path, "579.rdf") is not None and not (tmp_path / "1065.rdf").exists()
    catalog = {1065: ("The Raven (catalog)", "Poe")}
    again = ingest_books(gutenberg_server, [1065], cache_dir=tmp_path, catalog=catalog)
    assert set(again.poems.column("book_title").to_pylist()) == {"The Raven (catalog)"}


def test_the_ingest_stage_reuses_an_unchanged_corpus(gutenberg_server, tmp_path):
    from emoverse.paths import RunPaths

    paths = RunPaths(tmp_path)
    first = ingest(gutenberg_server, [1065, MISSING_ID], paths)
    assert (first.books, first.rejected_books, first.fetched, first.reused) == (1, 1, 1, False)
    assert first.left_out[0][:2] == (MISSING_ID, NOT_FOUND)
    assert paths.poems_file.exists() and paths.rejects_file.exists()
    # MISSING_ID is not in the cache: the key is unknown, so the stage runs again.
    assert not ingest(gutenberg_server, [1065, MISSING_ID], paths).reused
    again = ingest(gutenberg_server, [1065], paths)
    assert (again.reused, again.fetched) == (False, 0)  # other ids: parsed again, from the cache
    reused = ingest(gutenberg_server, [1065], paths)
    assert reused.to_dict() == {**again.to_dict(), "from_cache": 0, "reused": True}


# --- hardening: one bad byte, endless and dripping mirrors ------------------------


def test_one_invalid_byte_keeps_a_utf8_book_utf8_and_is_counted(tmp_path):
    good = raw_book(1065).replace(b"'", "’".encode())  # a book with curly quotes
    cut = good.index(b"\n", len(good) // 2) + 1
    raw = good[:cut] + b"\xff " + good[cut:]  # one invalid byte in the middle
    text = decode_book(raw)
    assert "â€" not in text and "\ufffd" in text
    assert text.replace("\ufffd ", "", 1) == decode_book(good)
    rows, rejects = book_rows_and_rejects(1065, raw, max_lines=40, metadata=None)
    replaced = [r for r in rejects if r["reason"] == BYTES_REPLACED]
    assert replaced and replaced[0]["detail"].startswith("1 invalid UTF-8 sequences")
    assert not any("â€" in r["text"] for r in rows)
    # A whole cp1252 book still reads as cp1252, and reports nothing replaced.
    assert decode_book_counted(b"caf\xe9 \x93quoted\x94\n") == ("café “quoted”\n", 0)


def test_the_ingest_report_names_replaced_bytes(tmp_path):
    mirror = tmp_path / "mirror"
    raw = raw_book(1065).replace(b"'", "’".encode())
    cut = raw.index(b"\n", len(raw) // 2)
    (mirror / "cache/epub/1065").mkdir(parents=True)
    (mirror / book_path(1065)).write_bytes(raw[:cut] + b"\xfe" + raw[cut:])
    result = ingest_books(str(mirror), [1065])
    poems_dir = tmp_path / "poems"
    poems_dir.mkdir()
    write_poems(result.poems, poems_dir)
    write_rejects(result.rejects, poems_dir)
    assert "1 invalid UTF-8 sequences replaced" in ingest_report(poems_dir)


def test_an_endless_body_is_cut_at_the_cap(scripted_mirror, monkeypatch):
    m = scripted_mirror
    monkeypatch.setenv("EMOVERSE_MAX_BOOK_BYTES", str(2_000_000))
    m.script(book_path(1065), "endless")
    with pytest.raises(BookRejectedError, match="2000000 bytes") as info:
        fetch_book(m.url, 1065, **FAST)
    assert info.value.reason == FETCH_FAILED
    assert m.count(book_path(1065)) == 1  # over the cap is final, not retried
    # A length announced over the cap is refused before the body is read.
    monkeypatch.setenv("EMOVERSE_MAX_BOOK_BYTES", str(1000))
    with pytest.raises(BookRejectedError, match="announces"):
        fetch_book(m.url, 1041, **FAST)


def test_a_dripping_mirror_meets_the_download_deadline(scripted_mirror, monkeypatch, tmp_path):
    m = scripted_mirror
    monkeypatch.setenv("EMOVERSE_DOWNLOAD_DEADLINE_S", "0.5")
    m.script(book_path(1065), "drip")
    result = ingest_books(m.url, [1065, 1041], cache_dir=tmp_path, **FAST)
    assert result.ingested == (1041,)
    reason, detail = _reasons(result)[1065]
    assert reason == FETCH_FAILED and "not done within 0.5 s" in detail
    assert "all attempts together" in detail
    assert m.count(book_path(1065)) == 1  # the deadline is every attempt's: none left to retry


def test_a_dripping_mirror_is_given_up_on_within_the_deadline_in_all(scripted_mirror, monkeypatch):
    """The deadline bounds a book's download, retries included: with four attempts a
    dripping mirror used to hold a book four deadlines long (20 minutes by default)."""
    import time

    from emoverse import settings

    monkeypatch.delenv("EMOVERSE_DOWNLOAD_DEADLINE_S", raising=False)
    assert settings.download_deadline_s() <= 120  # a few-MB book within two minutes, or never
    monkeypatch.setenv("EMOVERSE_DOWNLOAD_DEADLINE_S", "1")
    m = scripted_mirror
    m.script(book_path(1065), "drip")
    started = time.monotonic()
    with pytest.raises(BookRejectedError, match="not done within 1 s"):
        fetch_book(m.url, 1065, retry=RetryPolicy(4, base_delay=0.01))
    assert time.monotonic() - started < 2.5  # not four deadlines
    assert m.count(book_path(1065)) == 1
