"""Form in the sampling loop (models/generation/form.py) on a real tiny model whose tokenizer
was trained on the Sonnets, checked with the real CMU Pronouncing Dictionary: exact lines,
stanzas, rhymes, reproducible and the same alone or batched; the form's rules refused by the
CLI (exit 2, one line) and over HTTP (422), and kept by both."""

import httpx
import pytest

from apps import cli
from apps.requests import resolve
from apps.server import create_app, running_app
from emoverse.corpus import book_to_rows
from emoverse.errors import GenerationSettingError
from models.folders.model_folder import build_scratch_model
from models.generation.form import end_word, rhymes
from models.generation.generate import GenerationRequest, PoemGenerator
from models.registry.model_registry import ModelRegistry


@pytest.fixture(scope="module")
def sonnets_model(gutenberg_dir, tmp_path_factory):
    raw = (gutenberg_dir / "cache/epub/1041/pg1041.txt").read_bytes()
    sonnets = [row["text"] for row in book_to_rows(1041, raw)]
    data_dir = tmp_path_factory.mktemp("form")
    return build_scratch_model("scratch:tiny", sonnets, data_dir / "models" / "m", seed=0)


@pytest.fixture(scope="module")
def generator(sonnets_model):
    return PoemGenerator(sonnets_model)


def _write(generator, request):
    rows = generator.rows(request)
    generator.cohort(rows).run()
    return rows, [generator.text(row) for row in rows]


def _lines(poem: str) -> list[str]:
    return [line for line in poem.split("\n") if line.strip()]


@pytest.mark.parametrize(("lines", "stanzas"), [(1, None), (4, None), (6, 3), (8, 2), (12, 4)])
def test_a_poem_has_exactly_the_lines_and_stanzas_asked(generator, lines, stanzas):
    _, poems = _write(generator, GenerationRequest(n=4, seed=5, lines=lines, stanzas=stanzas))
    for poem in poems:
        assert len(_lines(poem)) == lines, poem
        parts = poem.split("\n\n")
        assert len(parts) == (stanzas or 1), poem
        assert all(len(part.strip("\n").split("\n")) == lines // (stanzas or 1) for part in parts)
        assert "\n\n\n" not in poem


@pytest.mark.parametrize("scheme", ["AABB", "ABAB", "ABBA", "AAAA", "ABCB"])
def test_the_lines_a_scheme_pairs_rhyme(generator, scheme):
    rows, poems = _write(generator, GenerationRequest(n=6, seed=11, lines=8, rhyme=scheme))
    checked = 0
    for row, poem in zip(rows, poems, strict=True):
        lines = _lines(poem)
        assert len(lines) == 8, poem
        if row.form.fallbacks:  # nothing rhymed within reach: a free line, by design
            continue
        for i, line in enumerate(lines):
            first = scheme.index(scheme[i % 4]) + (i // 4) * 4  # the line's leader
            if first != i:
                word, leader = end_word(line), end_word(lines[first])
                assert rhymes(leader, word), f"{leader!r} / {word!r} in\n{poem}"
                checked += 1
    assert checked and sum(not row.form.fallbacks for row in rows) >= 4  # most need none


def test_form_is_reproducible_and_the_same_alone_or_batched(generator):
    ask = GenerationRequest(n=2, seed=3, lines=8, stanzas=2, rhyme="ABAB")
    _, alone = _write(generator, ask)
    assert _write(generator, ask)[1] == alone  # the same seed, the same poems
    others = [
        GenerationRequest(n=3, seed=9),  # free verse
        GenerationRequest(n=2, seed=4, lines=4, rhyme="AABB"),
    ]
    rows = [row for request in [*others, ask] for row in generator.rows(request)]
    generator.cohort(rows).run()
    assert [generator.text(row) for row in rows[-2:]] == alone
    assert _write(generator, GenerationRequest(n=2, seed=4, lines=8, rhyme="ABAB"))[1] != alone


def test_a_first_line_counts_as_the_poems_first(generator):
    prompt = "Shall I compare thee to a summer's day?\n"
    _, poems = _write(
        generator, GenerationRequest(n=3, seed=2, prompt=prompt, lines=4, rhyme="ABAB")
    )
    for poem in poems:
        lines = _lines(poem)
        assert lines[0] == prompt.strip() and len(lines) == 4


def _resolve(**form):
    options = {
        "prompt": "", "n": 1, "seed": 0, "max_new_tokens": 120, "temperature": 0.9,
        "top_k": 50, "top_p": 0.95, "no_repeat_ngram_size": 3,
        "lines": None, "stanzas": None, "rhyme": None, **form,
    }  # fmt: skip
    return resolve(emotion="joy", options=options)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"lines": 2, "rhyme": "ABAB"}, "rhyme ABAB has 4 lines, more than the 2 asked"),
        ({"lines": 4, "rhyme": "AB1B"}, "rhyme must be letters A to Z"),
        ({"lines": 4, "rhyme": "abab"}, "rhyme must be letters A to Z"),
        ({"lines": 6, "rhyme": "ABAB"}, "lines must be a multiple of 4, got 6"),
        ({"lines": 6, "stanzas": 4}, "stanzas must divide the lines evenly"),
        ({"lines": 0}, "lines must be between 1 and 64, got 0"),
        ({"lines": 3000}, "lines must be between 1 and 64, got 3000"),
        ({"stanzas": 2}, "lines must be given with stanzas or rhyme"),
        ({"rhyme": "AABB"}, "lines must be given with stanzas or rhyme"),
        ({"lines": 20}, "max_new_tokens must be at least 159 for 20 lines"),
        ({"lines": 2, "prompt": "one\ntwo\n"}, "prompt must be the start of the first line"),
    ],
)
def test_impossible_forms_are_refused_naming_the_option(form, message):
    with pytest.raises(GenerationSettingError, match=message.replace("(", r"\(")):
        _resolve(**form)


def test_none_and_no_form_are_free_verse():
    assert _resolve(lines=4, rhyme="none").request.form.rhyme is None
    assert _resolve().request.form is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lines", "2", "--rhyme", "ABAB"], "--rhyme ABAB has 4 lines, more than the 2 asked"),
        (["--lines", "0"], "--lines must be between 1 and 64, got 0"),
        (["--lines", "5000"], "--lines must be between 1 and 64, got 5000"),
        (["--lines", "6", "--stanzas", "4"], "--stanzas must divide the lines evenly"),
        (["--lines", "4", "--rhyme", "AXZ?"], "--rhyme must be letters A to Z"),
    ],
)
def test_the_cli_refuses_impossible_forms_in_one_line(tmp_path, capsys, args, message):
    try:
        code = cli.main(["generate", "--data-dir", str(tmp_path), "--emotion", "joy", *args])
    except SystemExit as exc:  # argparse's bounds
        code = exc.code
    out, err = capsys.readouterr()
    assert code == cli.EXIT_BAD_INPUT
    # One line names the problem (argparse's bounds print their usage above it).
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err
    assert out == ""


@pytest.fixture(scope="module")
def served(sonnets_model, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("form-serve")
    ModelRegistry.for_data_dir(data_dir).register(
        "joy", sonnets_model, metrics={"val_loss": 5.0}, parent="scratch:tiny",
        data_fingerprint="f",
    )  # fmt: skip
    app = create_app(data_dir, registry_ttl_s=0)
    with running_app(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client, data_dir


def test_http_and_cli_write_the_form_the_library_writes(served, generator, capsys):
    client, data_dir = served
    body = {"emotion": "joy", "seed": 7, "n": 2, "lines": 8, "stanzas": 2, "rhyme": "ABBA"}
    answer = client.post("/generate", json=body)
    assert answer.status_code == 200, answer.text
    request = GenerationRequest(n=2, seed=7, lines=8, stanzas=2, rhyme="ABBA")
    assert answer.json()["poems"] == generator.generate(request)
    args = ["--emotion", "joy", "--seed", "7", "-n", "2", "--lines", "8", "--stanzas", "2"]
    code = cli.main(["generate", "--data-dir", str(data_dir), *args, "--rhyme", "ABBA"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == "\n\n---\n\n".join(answer.json()["poems"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"lines": 2, "rhyme": "ABAB"}, "rhyme: ABAB has 4 lines, more than the 2 asked"),
        ({"lines": 0}, "greater than or equal to 1"),
        ({"lines": 4000}, "less than or equal to 64"),
        ({"lines": 6, "stanzas": 4}, "stanzas: must divide the lines evenly"),
        ({"lines": 4, "rhyme": "A-B-"}, "rhyme: must be letters A to Z"),
    ],
)
def test_http_refuses_impossible_forms_with_a_422(served, body, message):
    answer = served[0].post("/generate", json={"emotion": "joy", **body})
    assert answer.status_code == 422
    assert message in answer.json()["message"]


def test_the_page_asks_for_a_form_in_headless_chromium(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    from test_serve import _chromium  # tests/ is on the path (pytest's prepend import mode)

    driver = _chromium()
    try:
        driver.get(str(served[0].base_url) + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#emotion option"))
        Select(driver.find_element(By.ID, "emotion")).select_by_value("joy")
        driver.find_element(By.ID, "first-line").send_keys("Shall I compare thee")
        driver.find_element(By.ID, "lines").send_keys("4")
        driver.find_element(By.ID, "stanzas").send_keys("2")
        Select(driver.find_element(By.ID, "rhyme")).select_by_value("ABAB")
        driver.find_element(By.ID, "write").click()
        wait.until(lambda d: d.find_element(By.ID, "meta").text.startswith("emoverse"))
        poem = driver.find_element(By.ID, "poem").text
        assert poem.startswith("Shall I compare thee\n")
        assert len(_lines(poem)) == 4 and len(poem.split("\n\n")) == 2, poem
        # An impossible ask: the server's one line, shown to the reader.
        Select(driver.find_element(By.ID, "rhyme")).select_by_value("AAAA")
        driver.find_element(By.ID, "lines").clear()
        driver.find_element(By.ID, "lines").send_keys("2")
        driver.find_element(By.ID, "stanzas").clear()
        driver.find_element(By.ID, "write").click()
        error = wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert "AAAA has 4 lines, more than the 2 asked" in error
    finally:
        driver.quit()
