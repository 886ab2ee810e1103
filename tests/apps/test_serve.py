"""`emoverse serve` on uvicorn over a real sqlite registry of tiny scratch models, the page in
headless Chromium, and the `generate` command's options."""

import json
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import torch

from apps import cli
from apps.batcher import RETRY_AFTER_S, BatchSettings
from apps.requests import FIELDS, FLAGS, OPTIONS, resolve
from apps.server import SERVER_MAX_N, create_app, is_loopback, running_app
from emoverse.corpus import book_to_rows
from emoverse.emotions import LABELS
from emoverse.errors import EmoverseError, GenerationSettingError
from emoverse.judgements import Judgement, JudgementStore, ReaderRules
from models.folders.model_folder import build_scratch_model
from models.generation.generate import (
    GenerationRequest,
    SamplingSettings,
    generate_poems,
)
from models.generation.sampling import MIN_ROWS
from models.registry.model_registry import ModelRegistry

NOT_PROMOTED = "val_loss 6.1 did not beat the base's 5.9"


class Served:
    def __init__(self, url: str, data_dir: Path, app, models: dict[str, Path]):
        self.url = url
        self.data_dir = data_dir
        self.app = app
        self.models = models
        self.client = httpx.Client(base_url=url, timeout=60)

    def generate(self, **body) -> httpx.Response:
        return self.client.post("/generate", json=body)

    def batcher(self, emotion: str = "joy"):
        models = self.app.state.models
        return models.batcher(models.current(emotion)[0])


def _until(condition, what: str, seconds: float = 60) -> None:
    """Wait for `condition` (a state the test sets up, not a speed it checks)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.005)


def _post_in_threads(url: str, bodies: list[dict], path: str = "/generate") -> tuple:
    """POST every body from its own thread at once; (threads, responses by index)."""
    responses: list = [None] * len(bodies)

    def post(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            responses[i] = http.post(path, json=bodies[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    return threads, responses


def _sse_events(lines) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: ") :])))
    return events


@pytest.fixture(scope="module")
def served(gutenberg_dir, tmp_path_factory):
    """joy: a champion v1; fear: only a version that failed the gate; trust: v1 champion and
    v2 registered but not promoted (the promotion test moves it); surprise: pickled weights;
    every other emotion: nothing."""
    raw = (gutenberg_dir / "cache/epub/1041/pg1041.txt").read_bytes()
    sonnets = [row["text"] for row in book_to_rows(1041, raw)]
    data_dir = tmp_path_factory.mktemp("serve")
    m1 = build_scratch_model("scratch:tiny", sonnets, data_dir / "models" / "m1", seed=0)
    m2 = build_scratch_model("scratch:tiny", sonnets, data_dir / "models" / "m2", seed=1)
    pickled = shutil.copytree(m1, data_dir / "models" / "pickled")

    registry = ModelRegistry.for_data_dir(data_dir)
    meta = {"metrics": {"val_loss": 5.0}, "parent": "scratch:tiny", "data_fingerprint": "f"}
    registry.register("joy", m1, **meta)
    registry.register("fear", m2, **meta, promote=False, promotion=NOT_PROMOTED)
    registry.register("trust", m1, **meta)
    registry.register("trust", m2, **meta, promote=False)
    registry.register("surprise", pickled, **meta)
    # The registry refuses to register pickled weights; a folder can still be swapped after.
    (pickled / "model.safetensors").unlink()
    torch.save({}, pickled / "pytorch_model.bin")

    app = create_app(data_dir, registry_ttl_s=0)  # every request sees a promotion at once
    with running_app(app) as url:
        s = Served(url, data_dir, app, {"m1": m1, "m2": m2})
        yield s
        s.client.close()


def test_binds_loopback_and_lists_the_nine_emotions(served):
    assert served.url.startswith("http://127.0.0.1:")
    response = served.client.get("/emotions")
    assert response.status_code == 200
    assert response.json() == {"emotions": list(LABELS)}


def test_models_lists_champions_and_fallbacks(served):
    body = served.client.get("/models").json()
    by_emotion = {m["emotion"]: m for m in body["models"]}
    assert set(by_emotion) == {"joy", "fear", "trust", "surprise"}
    assert by_emotion["joy"]["version"] == 1 and by_emotion["joy"]["champion"] is True
    assert by_emotion["joy"]["warning"] is None and by_emotion["joy"]["metrics"]["val_loss"] == 5.0
    fear = by_emotion["fear"]
    assert fear["champion"] is False
    assert "emoverse-fear has no champion; using its newest version v1" in fear["warning"]
    assert NOT_PROMOTED in fear["warning"]
    assert set(body["missing"]) == set(LABELS) - set(by_emotion)


def test_the_conditional_model_is_offered_only_where_it_exists(served, judged):
    assert served.client.get("/models").json()["conditional"] is None
    response = served.generate(emotion="joy", model="conditional")
    assert response.status_code == 404
    assert "`emoverse train --mode conditional`" in response.json()["message"]
    assert judged.client.get("/models").json()["conditional"] == {"version": 1, "champion": True}


def test_generate_is_deterministic_for_a_seed_and_matches_the_library(served):
    body = {"emotion": "joy", "prompt": "Shall I", "n": 2, "seed": 5, "max_new_tokens": 12}
    first = served.generate(**body)
    assert first.status_code == 200, first.text
    result = first.json()
    assert result["version"] == 1 and result["champion"] is True and result["warning"] is None
    assert result["seed"] == 5 and len(result["poems"]) == 2
    assert all(p.startswith("Shall I") and len(p) > len("Shall I") for p in result["poems"])
    assert served.generate(**body).json()["poems"] == result["poems"]
    assert served.generate(**{**body, "seed": 6}).json()["poems"] != result["poems"]
    # The same settings through the library (what the CLI runs) give the same poems.
    assert result["poems"] == generate_poems(
        served.models["m1"], prompt="Shall I", n=2, seed=5, max_new_tokens=12
    )


def test_a_request_without_a_seed_gets_one_that_reproduces_it(served):
    result = served.generate(emotion="joy", max_new_tokens=8).json()
    assert isinstance(result["seed"], int)
    again = served.generate(emotion="joy", max_new_tokens=8, seed=result["seed"]).json()
    assert again["poems"] == result["poems"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"emotion": "happy"}, "emotion: Input should be 'anger', 'anticipation', 'disgust'"),
        ({}, "body: Value error, give either emotion (with strength) or blend"),
        ({"emotion": "joy", "n": 0}, "n: Input should be greater than or equal to 1"),
        (
            {"emotion": "joy", "n": SERVER_MAX_N + 1},
            f"n: Input should be less than or equal to {SERVER_MAX_N}",
        ),
        ({"emotion": "joy", "n": "many"}, "n: Input should be a valid integer"),
        ({"emotion": "joy", "seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"emotion": "joy", "seed": 2**31}, "seed: Input should be less than or equal to"),
        ({"emotion": "joy", "max_new_tokens": 0}, "max_new_tokens: Input should be greater"),
        ({"emotion": "joy", "max_new_tokens": 5000}, "max_new_tokens: Input should be less"),
        (
            {"emotion": "joy", "prompt": "x" * 2001},
            "prompt: String should have at most 2000 characters",
        ),
        ({"emotion": "joy", "prompt": 7}, "prompt: Input should be a valid string"),
        ({"emotion": "joy", "temperature": 0}, "temperature: Input should be greater than or"),
        ({"emotion": "joy", "top_p": 1.5}, "top_p: Input should be less than or equal to 1"),
        ({"emotion": "joy", "top_k": -1}, "top_k: Input should be greater than or equal to 0"),
        ({"emotion": "joy", "no_repeat_ngram_size": 17}, "no_repeat_ngram_size: Input should"),
        ({"emotion": "joy", "temprature": 1.0}, "temprature: Extra inputs are not permitted"),
        # Within the option's bounds but past the tiny model's 256-token context.
        (
            {"emotion": "joy", "max_new_tokens": 1000},
            "max_new_tokens: must be at most 255 with this prompt (context 256 tokens, prompt 1)"
            ", got 1000",
        ),
        (
            {"emotion": "joy", "prompt": "love " * 400},
            "prompt: is ",  # then the prompt's length in tokens, past the context
        ),
    ],
)
def test_bad_input_is_a_422_naming_the_field(served, body, message):
    response = served.client.post("/generate", json=body)
    assert response.status_code == 422, response.text
    result = response.json()
    assert result["message"].startswith(message), result["message"]
    field = message.split(":")[0]
    assert any(d["loc"][-1] == field for d in result["detail"])


def test_a_body_that_is_not_json_is_a_422(served):
    response = served.client.post(
        "/generate", content=b"{emotion: joy", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["message"] == (
        "body: invalid JSON (Expecting property name enclosed in double quotes)"
    )


def test_an_emotion_without_a_model_is_a_404_saying_what_to_do(served):
    response = served.generate(emotion="anger")
    assert response.status_code == 404
    assert "no anger model" in response.json()["message"]
    assert "run `emoverse run`" in response.json()["message"]


def test_an_emotion_without_a_champion_falls_back_with_a_warning(served):
    response = served.generate(emotion="fear", seed=1, max_new_tokens=8)
    assert response.status_code == 200
    result = response.json()
    assert result["version"] == 1 and result["champion"] is False
    assert result["warning"].startswith("emoverse-fear has no champion; using its newest version")
    assert result["poems"][0]


def test_pickled_weights_are_never_loaded(served):
    response = served.generate(emotion="surprise", max_new_tokens=8)
    assert response.status_code == 503
    assert (
        "holds no safetensors weights (found pytorch_model.bin); refusing to load"
        in (response.json()["message"])
    )


def test_promote_and_rollback_take_effect_on_the_next_request(served):
    registry = ModelRegistry.for_data_dir(served.data_dir)
    body = {"emotion": "trust", "prompt": "O", "seed": 3, "max_new_tokens": 10}
    v1 = served.generate(**body).json()
    assert v1["version"] == 1
    loads = served.app.state.models.loads

    registry.promote("trust", 2)
    v2 = served.generate(**body).json()
    assert v2["version"] == 2 and v2["champion"] is True
    assert served.app.state.models.loads == loads + 1  # the new champion was loaded
    assert v2["poems"] == generate_poems(served.models["m2"], prompt="O", seed=3, max_new_tokens=10)
    assert v2["poems"] != v1["poems"]

    registry.rollback("trust")
    back = served.generate(**body).json()
    assert back["version"] == 1 and back["poems"] == v1["poems"]
    assert served.app.state.models.loads == loads + 1  # v1 came from the cache


def test_finished_rows_leave_the_batch_and_change_no_other_poem(served):
    """The sampler alone: rows that end early are sliced out of the KV cache, and every row
    writes what it writes alone (seeded per row, however many share the batch)."""
    generator = served.batcher().generator
    requests = [
        GenerationRequest(prompt="O", n=3, seed=4, max_new_tokens=3),
        GenerationRequest(prompt="O", n=5, seed=5, max_new_tokens=12),
    ]
    short, long = (generator.rows(r) for r in requests)
    cohort = generator.cohort(short + long)
    for _ in range(3):
        cohort.step()
    assert cohort.rows == long  # the short poems are done and gone
    assert cohort.cache.layers[0].keys.shape[0] == len(long)
    while len(cohort.rows) > 0:
        cohort.step()
    assert all(row.new_tokens == 12 or row.finished for row in long)
    assert [generator.text(r) for r in short] == generator.generate(requests[0])
    assert [generator.text(r) for r in long] == generator.generate(requests[1])
    alone = generator.rows(requests[1])[:1]  # one row: filler rows make up MIN_ROWS
    generator.cohort(alone).run()
    assert generator.text(alone[0]) == generator.text(long[0]) and MIN_ROWS > 1


def test_the_event_loop_answers_while_a_poem_is_written(served):
    """Generation runs on the model's worker thread: a long batch does not hold up others."""
    batcher = served.batcher()
    worker = threading.Thread(
        target=served.generate,
        kwargs={"emotion": "joy", "n": SERVER_MAX_N, "seed": 2, "max_new_tokens": 250},
    )
    worker.start()
    try:
        _until(lambda: batcher.running > 0, "the batch started")
        with httpx.Client(base_url=served.url, timeout=60) as other:
            assert other.get("/emotions").status_code == 200
        assert batcher.running > 0  # answered before the batch was done
    finally:
        worker.join()


# Sixteen requests that differ in prompt (so in prompt length), poems, length and sampling.
CONCURRENT = [
    {
        "emotion": "joy",
        "prompt": ["", "Shall I", "O thou", "When"][i % 4],
        "n": 1 + i % 3,
        "seed": 100 + i,
        "max_new_tokens": 6 + 5 * (i % 5),  # rows finish at different steps
        "temperature": [0.9, 1.4, 0.6][i % 3],
        "top_k": [50, 0, 7, 1000][i % 4],
        "top_p": [0.95, 1.0, 0.5][i % 3],
        "no_repeat_ngram_size": [3, 0, 1, 2][i % 4],
    }
    for i in range(16)
]


def test_concurrent_requests_are_batched_and_each_gets_the_poems_it_gets_alone(served):
    alone = []
    for body in CONCURRENT:  # one at a time: each alone in its batch
        response = served.client.post("/generate", json=body)
        assert response.status_code == 200, response.text
        alone.append(response.json())

    batcher = served.batcher()
    before = Counter(batcher.batch_sizes)
    with batcher.hold():  # all sixteen wait in the queue, then go in together
        threads, together = _post_in_threads(served.url, CONCURRENT)
        _until(lambda: batcher.pending == len(CONCURRENT), "all sixteen queued")
    for thread in threads:
        thread.join()
    assert [r.status_code for r in together] == [200] * len(CONCURRENT)
    # Byte-identical poems (and seeds, versions...): batching changes nothing a client sees.
    assert [r.json() for r in together] == alone
    poems = [p.encode() for r in together for p in r.json()["poems"]]
    assert poems == [p.encode() for a in alone for p in a["poems"]]
    started = Counter(batcher.batch_sizes) - before
    rows = sum(body["n"] for body in CONCURRENT)
    # One cohort per prompt length, holding every row: real batches (7 to 17 rows here).
    lengths = {len(batcher.generator.prompt_ids(body["prompt"])) for body in CONCURRENT}
    assert sum(size * count for size, count in started.items()) == rows
    assert sum(started.values()) == len(lengths) < len(CONCURRENT), started


def test_a_full_queue_is_a_503_with_retry_after(served):
    app = create_app(
        served.data_dir, registry_ttl_s=60, batching=BatchSettings(max_queue=2, max_batch=8)
    )
    with running_app(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        models = app.state.models
        batcher = models.batcher(models.current("joy")[0])
        body = {"emotion": "joy", "seed": 1, "max_new_tokens": 4}
        with batcher.hold():
            threads, queued = _post_in_threads(url, [body, body])
            _until(lambda: batcher.pending == 2, "two requests queued")
            refused = http.post("/generate", json=body)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == str(RETRY_AFTER_S)
            assert "busy" in refused.json()["message"]
        for thread in threads:
            thread.join()
        assert [r.status_code for r in queued] == [200, 200]
        assert http.post("/generate", json=body).json()["poems"] == queued[0].json()["poems"]
        models.close()


def test_a_request_out_of_time_is_a_504(served):
    app = create_app(served.data_dir, batching=BatchSettings(timeout_s=0.1))
    with running_app(app) as url:
        models = app.state.models
        batcher = models.batcher(models.current("joy")[0])
        with batcher.hold():  # it waits in the queue past its deadline
            threads, late = _post_in_threads(url, [{"emotion": "joy", "max_new_tokens": 4}])
            _until(lambda: batcher.pending == 1, "the request queued")
            time.sleep(0.2)
        threads[0].join()
        assert late[0].status_code == 504
        assert late[0].json()["message"] == "timed out after 0.1 s"
        assert batcher.cancelled == 1
        models.close()


def test_streaming_sends_tokens_then_the_same_answer(served):
    body = {"emotion": "joy", "prompt": "Shall I", "n": 2, "seed": 11, "max_new_tokens": 20}
    plain = served.generate(**body).json()
    with served.client.stream("POST", "/generate?stream=true", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(response.iter_lines())
    assert events[-1] == ("done", plain)
    tokens = [data for name, data in events if name == "token"]
    assert all(name == "token" for name, _ in events[:-1])
    assert len(tokens) > 2 * 5  # a piece per token or so, not the poem at once
    for i, poem in enumerate(plain["poems"]):
        assert "".join(t["text"] for t in tokens if t["poem"] == i).strip() == poem


def test_streaming_validates_before_it_starts(served):
    response = served.client.post(
        "/generate?stream=true", json={"emotion": "joy", "max_new_tokens": 1000}
    )
    assert response.status_code == 422
    assert response.json()["message"].startswith("max_new_tokens: must be at most 255")


def test_a_client_that_goes_away_stops_its_generation(served):
    batcher = served.batcher()
    _until(lambda: batcher.running == 0 and batcher.pending == 0, "the batcher idle")
    cancelled, tokens = batcher.cancelled, batcher.tokens
    body = {"emotion": "joy", "n": SERVER_MAX_N, "seed": 9, "max_new_tokens": 250}
    with (
        httpx.Client(base_url=served.url, timeout=60) as http,
        http.stream("POST", "/generate?stream=true", json=body) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("event: token"):
                break  # the first token: hang up
    _until(lambda: batcher.cancelled == cancelled + 1, "the generation was stopped")
    _until(lambda: batcher.running == 0, "its rows left the batch")
    # An untrained model writes all 250 tokens of each poem unless stopped.
    assert batcher.tokens - tokens < SERVER_MAX_N * 250


def test_the_pages_and_their_static_files_are_served_offline(served):
    response = served.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for element in ('id="emotion"', 'id="first-line"', 'id="write"', 'id="poem"', 'id="error"'):
        assert element in page
    assert 'max="2"' in page and "__FLUENT_MAX__" not in page  # the slider stops at fluent
    judge = served.client.get("/judge").text
    kinds = {".js": "text/javascript", ".css": "text/css"}
    for html, assets in ((page, ("app.js", "style.css")), (judge, ("judge.js", "judge.css"))):
        for name in assets:
            assert f"/static/{name}" in html
            asset = served.client.get(f"/static/{name}")
            assert asset.status_code == 200 and asset.text.strip()
            assert asset.headers["content-type"].startswith(kinds[Path(name).suffix])
            assert "http://" not in asset.text and "https://" not in asset.text
        assert "http://" not in html and "https://" not in html  # offline: no external assets
    assert served.client.get("/static/../page.py").status_code == 404


@pytest.mark.parametrize(
    ("names", "asked", "message"),
    [
        (FLAGS, {"emotion": "joy", "blend": {"fear": 1}}, "give either --emotion (with --str"),
        (FIELDS, {"emotion": None}, "give either emotion (with strength) or blend"),
        (FLAGS, {"emotion": None, "blend": {"joy": 1}, "strength": 2}, "--strength scales one"),
        (FIELDS, {"emotion": "joy", "model": "best", "strength": 0.5}, "model best writes one"),
        (FLAGS, {"emotion": "joy", "model": "conditional", "strength": 0.5}, "--model conditional"),
        (FIELDS, {"emotion": None, "blend": {"glee": 1}}, "blend names 'glee'"),
        (FLAGS, {"emotion": "neutral", "strength": 0.5}, "--strength dials one of the eight"),
        (FIELDS, {"emotion": "glee"}, "unknown emotion 'glee'"),
    ],
)
def test_one_resolver_holds_the_request_rules_for_cli_and_http(names, asked, message):
    sampling = {"temperature": 0.9, "top_k": 50, "top_p": 0.95, "no_repeat_ngram_size": 3}
    form = {"lines": None, "stanzas": None, "rhyme": None}  # free verse (tests/test_form.py)
    options = {"prompt": "", "n": 1, "seed": 0, "max_new_tokens": 8, **sampling, **form}
    assert set(options) == set(OPTIONS)
    with pytest.raises(EmoverseError) as caught:
        resolve(**asked, options=options, names=names)
    assert str(caught.value).startswith(message), caught.value
    wanted = resolve(emotion="joy", strength=0.5, options=options, names=names)
    assert (wanted.weights, wanted.request.max_new_tokens) == ({"joy": 0.5}, 8)
    assert resolve(emotion="joy", strength=1, options=options).weights is None  # its own model
    with pytest.raises(GenerationSettingError, match=r"^max_new_tokens "):
        resolve(emotion="joy", options={**options, "max_new_tokens": 0}, names=names)


def _chromium():
    """A headless Chromium driven by Debian's chromedriver; skipped locally when missing, a
    failure on CI (where .ci/run installs it)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    if webdriver is None or not chromium or not chromedriver:
        reason = "headless Chromium needs selenium and Debian's chromium and chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run the browser test)")
        pytest.skip(reason)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))


@pytest.mark.slow
def test_the_page_writes_a_poem_in_headless_chromium(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = _chromium()
    try:
        driver.get(served.url + "/")
        wait = WebDriverWait(driver, 30)
        emotion = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#emotion option"))
        assert emotion.get_attribute("value") == "anger"
        assert not emotion.is_enabled()  # no model: not choosable
        # The dial starts at the emotion's own model, with no second emotion.
        assert driver.find_element(By.ID, "strength").get_attribute("value") == "1"
        assert Select(driver.find_element(By.ID, "second")).first_selected_option.text == "none"
        # No conditional model registered: only the emotions' own models are offered.
        models = Select(driver.find_element(By.ID, "model")).options
        assert [o.get_attribute("value") for o in models] == ["family"]
        Select(driver.find_element(By.ID, "emotion")).select_by_value("joy")
        driver.find_element(By.ID, "first-line").send_keys("Shall I compare thee")
        driver.find_element(By.ID, "write").click()
        poem = wait.until(lambda d: d.find_element(By.ID, "poem").text.strip())
        meta = wait.until(lambda d: d.find_element(By.ID, "meta").text.startswith("emoverse"))
        poem = driver.find_element(By.ID, "poem").text
        assert poem.startswith("Shall I compare thee\n") and len(poem) > 25
        assert driver.find_element(By.ID, "meta").text.startswith("emoverse-joy v1, seed ")
        # Streamed: the poem arrived in many pieces, shown as they came.
        assert int(driver.find_element(By.ID, "poem").get_attribute("data-pieces")) > 5
        assert meta
        assert not driver.find_element(By.ID, "warning").is_displayed()

        # The fallback warning reaches the reader too.
        Select(driver.find_element(By.ID, "emotion")).select_by_value("fear")
        driver.find_element(By.ID, "write").click()
        warning = wait.until(lambda d: d.find_element(By.ID, "warning").text)
        assert warning.startswith("emoverse-fear has no champion")

        # And so does an error: a registered folder with pickled weights.
        Select(driver.find_element(By.ID, "emotion")).select_by_value("surprise")
        driver.find_element(By.ID, "write").click()
        error = wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert "refusing to load" in error
        assert driver.find_element(By.ID, "poem").text == ""
    finally:
        driver.quit()


def _cli(served, capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["generate", "--data-dir", str(served.data_dir), *args])
    except SystemExit as exc:  # argparse rejects a value before main's own handling
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "argument -n: -n must be between 1 and 64, got 0"),
        (["--seed", "-1"], "argument --seed: --seed must be between 0 and 2147483647, got -1"),
        (
            ["--max-new-tokens", "2000"],
            "argument --max-new-tokens: --max-new-tokens must be between 1 and 1024, got 2000",
        ),
        (["--temperature", "0"], "--temperature must be between 0.05 and 5.0, got 0.0"),
        (["--temperature", "hot"], "--temperature must be a number, got 'hot'"),
        (["--top-k", "-3"], "--top-k must be between 0 and 1000, got -3"),
        (["--top-p", "1.5"], "--top-p must be between 0.01 and 1.0, got 1.5"),
        (["--no-repeat-ngram-size", "40"], "--no-repeat-ngram-size must be between 0 and 16"),
        (
            ["--max-new-tokens", "1000"],
            "emoverse: error: --max-new-tokens must be at most 255 with this prompt "
            "(context 256 tokens, prompt 1), got 1000",
        ),
    ],
)
def test_generate_options_out_of_bounds_exit_2_naming_the_option(served, capsys, args, message):
    code, out, err = _cli(served, capsys, "--emotion", "joy", *args)
    assert code == cli.EXIT_BAD_INPUT
    assert message in err and "Traceback" not in err
    assert out == ""


def test_generate_with_sampling_options_and_the_fallback_warning(served, capsys):
    args = ("--emotion", "fear", "--seed", "4", "--max-new-tokens", "10", "--prompt", "Night")
    code, out, err = _cli(served, capsys, *args, "--top-k", "0", "--temperature", "1.3")
    assert code == 0, err
    assert out.startswith("Night")
    assert "emoverse: warning: emoverse-fear has no champion; using its newest version v1" in err
    assert NOT_PROMOTED in err and "# emoverse-fear v1, seed 4" in err
    # The options reach the sampler: other settings, other poem; the same ones, the same.
    assert _cli(served, capsys, *args, "--top-k", "0", "--temperature", "1.3")[1] == out
    assert _cli(served, capsys, *args)[1] != out


def test_cli_defaults_are_the_library_defaults():
    args = cli.build_parser().parse_args(["generate", "--emotion", "joy"])
    sampling, request = SamplingSettings(), GenerationRequest()
    assert (args.temperature, args.top_k, args.top_p, args.no_repeat_ngram_size) == (
        sampling.temperature,
        sampling.top_k,
        sampling.top_p,
        sampling.no_repeat_ngram_size,
    )
    assert (args.max_new_tokens, args.seed, args.n) == (request.max_new_tokens, request.seed, 1)
    serve = cli.build_parser().parse_args(["serve"])
    assert (serve.host, serve.port) == ("127.0.0.1", 8000)
    batching = BatchSettings()
    assert (serve.batch_window_ms, serve.max_batch, serve.max_queue, serve.request_timeout) == (
        batching.window_ms,
        batching.max_batch,
        batching.max_queue,
        batching.timeout_s,
    )


def test_only_loopback_hosts_count_as_private():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.org"))


# --- human judging ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judged(served, tmp_path_factory):
    """A server whose champions are joy (m1) and sadness (m2), with fear (m2) registered but
    not promoted, the neutral base (m1) and a conditional model (m1): poems to judge, blind."""
    data_dir = tmp_path_factory.mktemp("judge")
    registry = ModelRegistry.for_data_dir(data_dir)
    meta = {"metrics": {"val_loss": 5.0}, "parent": "scratch:tiny", "data_fingerprint": "f"}
    registry.register("joy", served.models["m1"], **meta)
    registry.register("sadness", served.models["m2"], **meta)
    registry.register("fear", served.models["m2"], **meta, promote=False, promotion=NOT_PROMOTED)
    registry.register("neutral", served.models["m1"], **meta)
    registry.register("conditional", served.models["m1"], **meta)
    # Answers as soon as a poem comes: the reading time is not what these tests are about.
    app = create_app(data_dir, registry_ttl_s=0, reader_rules=ReaderRules(min_read_s=0))
    with running_app(app) as url:
        s = Served(url, data_dir, app, served.models)
        yield s
        s.client.close()


JUDGED = ("joy", "sadness", "fear", "neutral")  # the judged fixture's arms


def test_judging_draws_every_emotion_model_and_the_base_as_one_arm(judged):
    """Champion or not, each emotion's model is an arm, and the neutral base one arm more:
    not the base half the time because only one emotion has a champion."""
    from apps.server.judging import judgeable

    assert judgeable(judged.app.state.models) == ["fear", "joy", "sadness", "neutral"]
    drawn: dict[str, int] = {}
    for _ in range(60):  # every arm comes up (each misses 60 draws with p = 0.75**60)
        body = judged.client.get("/judge/poem").json()
        result = judged.client.post(
            "/judgements", json={"poem_id": body["poem_id"], "guess": "neutral"}
        ).json()
        drawn[result["emotion"]] = drawn.get(result["emotion"], 0) + 1
        if set(drawn) == set(JUDGED):
            break
    assert set(drawn) == set(JUDGED), drawn
    assert "conditional" not in drawn


def test_a_judgement_is_blind_recorded_and_counted(judged):
    handed = judged.client.get("/judge/poem")
    assert handed.status_code == 200, handed.text
    body = handed.json()
    assert set(body) == {"poem_id", "poem"} and body["poem"].strip()  # the emotion stays hidden
    answer = judged.client.post("/judgements", json={"poem_id": body["poem_id"], "guess": "joy"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["emotion"] in JUDGED and result["version"] == 1
    assert result["correct"] == (result["emotion"] == "joy")
    share = result["human_accuracy"]
    assert share["n"] >= 1 and 0.0 <= share["low"] <= share["share"] <= share["high"] <= 1.0
    # Stored in sqlite under the data dir, and in the registry as the version's metric.
    store = JudgementStore(judged.data_dir / "judgements" / "judgements.db")
    assert store.accuracy()[(result["emotion"], 1)].to_dict() == share
    record = ModelRegistry.for_data_dir(judged.data_dir).get(result["emotion"])
    assert record.human_accuracy == share
    models = {m["emotion"]: m for m in judged.client.get("/models").json()["models"]}
    assert models[result["emotion"]]["human_accuracy"] == share
    # A poem is judged once.
    again = judged.client.post("/judgements", json={"poem_id": body["poem_id"], "guess": "joy"})
    assert again.status_code == 422 and again.json()["message"].startswith("poem_id: unknown")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"poem_id": "abc", "guess": "happy"}, "guess"),
        ({"poem_id": "../etc", "guess": "joy"}, "poem_id"),
        ({"poem_id": "", "guess": "joy"}, "poem_id"),
        ({"guess": "joy"}, "poem_id"),
        ({"poem_id": "abc", "guess": "joy", "emotion": "joy"}, "emotion"),
    ],
)
def test_a_bad_judgement_is_a_422_naming_the_field(judged, body, field):
    response = judged.client.post("/judgements", json=body)
    assert response.status_code == 422
    assert response.json()["message"].startswith(f"{field}: ")


@pytest.mark.slow
def test_a_reader_judges_five_poems_in_headless_chromium(judged):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    store = JudgementStore(judged.data_dir / "judgements" / "judgements.db")
    for emotion in ("fear", "neutral"):  # in the tally, whichever poems come up below
        store.add(Judgement(emotion, 1, "joy", "a poem judged before"))
    before = sum(share.n for share in store.accuracy().values())
    driver = _chromium()
    try:
        driver.get(judged.url + "/judge")
        wait = WebDriverWait(driver, 30)
        joy = (By.CSS_SELECTOR, "#labels button[data-label='joy']")
        for i in range(5):
            wait.until(lambda d: d.find_element(*joy).is_enabled())  # a poem has come
            assert driver.find_element(By.ID, "poem").text.strip() not in ("", "…")
            assert driver.find_element(By.ID, "answer").text == ""  # nothing before the guess
            driver.find_element(*joy).click()
            score = f"of {i + 1} right."
            wait.until(lambda d, score=score: d.find_element(By.ID, "score").text.endswith(score))
            answer = driver.find_element(By.ID, "answer").text
            assert answer.split(": it was ")[1].split()[0] in JUDGED
            driver.find_element(By.ID, "next").click()
        # The tally is redrawn after each answer lands, so it is read in one script call (no
        # element handles to go stale) until the last answer's redraw has arrived.
        read = (
            "return [...document.querySelectorAll('#tally tr td:nth-child(2)')]"
            ".map((e) => e.textContent)"
        )

        def counted(d) -> int:
            return sum(int(cell.split()[2]) for cell in d.execute_script(read))

        try:
            wait.until(lambda d: counted(d) == before + 5)  # every answer in the counts
        finally:
            assert counted(driver) == before + 5
        # Which models are not champions, and which is the base, the tally says.
        names = driver.execute_script(
            "return [...document.querySelectorAll('#tally tr td:nth-child(1)')]"
            ".map((e) => e.textContent)"
        )
        assert {"fear v1 (not promoted)", "neutral v1 (the base)", "joy v1"} <= set(names), names
    finally:
        driver.quit()
    assert sum(share.n for share in store.accuracy().values()) == before + 5


# --- hardening --------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_a_413(served):
    big = {"emotion": "joy", "prompt": "x" * 70_000}
    response = served.client.post("/generate", json=big)
    assert response.status_code == 413 and "65536 bytes" in response.json()["message"]

    def chunks():  # no Content-Length: the limit counts what arrives
        yield b'{"emotion": "joy", "prompt": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}'

    response = served.client.post(
        "/generate", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_a_422_does_not_echo_the_input(served):
    secret = "S3CRET-" * 100
    for body in (
        {"emotion": "joy", "prompt": secret * 3},  # too long
        {"emotion": "joy", "mystery": secret},  # unknown field
        {"emotion": secret},
    ):
        response = served.generate(**body)
        assert response.status_code == 422 and "S3CRET" not in response.text
        assert response.json()["message"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"emotion": "joy", "temperature": NaN}', "temperature"),
        ('{"emotion": "joy", "temperature": Infinity}', "temperature"),
        ('{"emotion": "joy", "top_p": -Infinity}', "top_p"),
        ('{"emotion": "joy", "prompt": "\\ud800 lone"}', "prompt"),
        ('{"emotion": "joy", "n": true}', "n"),
        ('{"emotion": "joy", "n": "2"}', "n"),
        ('{"emotion": "joy", "seed": 1.5}', "seed"),
    ],
)
def test_non_numbers_lone_surrogates_and_loose_types_are_422(served, raw, field):
    response = served.client.post(
        "/generate", content=raw.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(field)


def test_an_integer_is_still_a_number(served):
    response = served.generate(emotion="joy", temperature=1, top_p=1, max_new_tokens=8, seed=1)
    assert response.status_code == 200


def test_errors_name_no_server_paths(served, tmp_path):
    data_dir = tmp_path / "data"
    damaged = data_dir / "models" / "damaged"
    shutil.copytree(served.models["m1"], damaged)
    ModelRegistry.for_data_dir(data_dir).register(
        "anticipation", damaged, metrics={}, parent="p", data_fingerprint="d"
    )
    raw = (damaged / "model.safetensors").read_bytes()
    (damaged / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with running_app(create_app(data_dir)) as url, httpx.Client(base_url=url) as http:
        response = http.post("/generate", json={"emotion": "anticipation"})
        assert response.status_code == 503 and "damaged" in response.json()["message"]
        assert str(tmp_path) not in response.text and "/tmp" not in response.text
    for emotion, status in (("surprise", 503), ("sadness", 404)):
        response = served.generate(emotion=emotion, max_new_tokens=8)
        assert response.status_code == status, response.text
        assert str(served.data_dir) not in response.text and "/tmp" not in response.text
        assert response.json()["message"]
    assert str(served.data_dir) not in served.client.get("/models").text


def test_light_requests_are_answered_while_48_generations_run(served):
    def emotions_answered_within_a_second() -> None:
        started = time.monotonic()
        assert served.client.get("/emotions").status_code == 200
        assert time.monotonic() - started < 1.0

    bodies = [{"emotion": "joy", "max_new_tokens": 60, "seed": i} for i in range(48)]
    threads, responses = _post_in_threads(served.url, bodies)
    try:
        emotions_answered_within_a_second()  # while the requests arrive (and a model loads)
        batcher = served.batcher()
        _until(lambda: batcher.pending + batcher.running > 0, "generation under way")
        emotions_answered_within_a_second()  # while they are written
    finally:
        for thread in threads:
            thread.join()
    assert all(r is not None and r.status_code == 200 for r in responses)


def test_trusted_hosts_and_connection_settings(served, monkeypatch):
    from apps.server import server_config

    app = create_app(served.data_dir, trusted_hosts=["poems.example"])
    with running_app(app) as url, httpx.Client(base_url=url) as http:
        assert http.get("/emotions", headers={"Host": "poems.example"}).status_code == 200
        assert http.get("/emotions", headers={"Host": "evil.example"}).status_code == 400
    monkeypatch.setenv("EMOVERSE_MAX_CONNECTIONS", "2")
    monkeypatch.setenv("EMOVERSE_KEEPALIVE_S", "2")
    config = server_config(app)
    assert (config.limit_concurrency, config.timeout_keep_alive) == (2, 2)
    with (
        running_app(create_app(served.data_dir)) as url,
        httpx.Client(base_url=url) as first,
        httpx.Client(base_url=url) as second,
    ):
        assert first.get("/emotions").status_code == 200  # its connection stays open...
        assert second.get("/emotions").status_code == 503  # ...and a second reaches the bound
