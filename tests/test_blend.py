"""Dialling and blending emotions (models/generation/blend.py): a real tiny family (a neutral base,
three
full children and a LoRA child fine-tuned from it with a few real steps), a real sqlite
registry, fixed seeds. The CLI's --strength/--blend and POST /generate's strength/blend too."""

import os
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

import models.generation.blend as blend
from apps import cli
from apps.server import create_app, running_app
from emoverse.corpus import book_to_rows
from emoverse.errors import EmoverseError, GenerationSettingError
from emoverse.paths import RunPaths
from emoverse.schema import POEM_SCHEMA
from emoverse.tagging import label_texts, tag_table, write_version
from models.config import TrainConfig
from models.evaluation.evaluate import _tag_rule, distinct_n, perplexity
from models.folders.card import read_card_metadata, save_model
from models.folders.model_folder import build_scratch_model, load_model
from models.generation.blend import (
    MAX_BLEND_EMOTIONS,
    check_weights,
    materialize,
    parse_blend,
    prune,
    resolve_recipe,
)
from models.generation.generate import generate_poems
from models.registry.model_registry import ModelRegistry
from models.reports.dial import DialPoint, breaks, fluent_up_to, measure_dial
from models.training.loop import fine_tune

QUICK = TrainConfig(batch_size=8, block_size=64, learning_rate=3e-3, warmup_steps=2, max_steps=4)
CHILD = QUICK.with_overrides(learning_rate=1e-2, max_steps=6)
POEMS = {"prompt": "Love", "n": 4, "seed": 3, "max_new_tokens": 24}
NOT_PROMOTED = "fidelity did not beat the base"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Family:
    def __init__(self, data_dir: Path, folders: dict[str, Path]):
        self.data_dir = data_dir
        self.folders = folders
        self.registry = ModelRegistry.for_data_dir(data_dir)
        self.blends = RunPaths(data_dir).blends


@pytest.fixture(scope="module")
def family(gutenberg_dir, tmp_path_factory) -> Family:
    """neutral v1 (champion), its children joy and trust (LoRA) champions, fear only a
    version that failed the gate; neutral v2 (champion now) and its child anger; sadness
    claims neutral v1 but has another tokenizer; surprise records no neutral parent."""
    raw = (gutenberg_dir / "cache/epub/1041/pg1041.txt").read_bytes()
    sonnets = [row["text"] for row in book_to_rows(1041, raw)]
    data_dir = tmp_path_factory.mktemp("dial")
    root = data_dir / "models"
    registry = ModelRegistry.for_data_dir(data_dir)
    meta = {"metrics": {}, "data_fingerprint": "f" * 64}
    folders: dict[str, Path] = {}

    def save(name: str, tuned, emotion: str, parent: str, config: TrainConfig) -> Path:
        folders[name] = save_model(
            tuned, root / name, emotion=emotion, parent=parent, config=config,
            data_fingerprint="f" * 64,
        )  # fmt: skip
        return folders[name]

    init = build_scratch_model("scratch:tiny", sonnets, root / "init")
    base = save("neutral1", fine_tune(init, sonnets[:60], [], QUICK), "neutral", "init", QUICK)
    registry.register("neutral", base, parent="scratch:tiny", **meta)
    parent = "emoverse-neutral v1"
    for emotion, poems, seed in (("joy", sonnets[60:100], 1), ("fear", sonnets[100:140], 2)):
        config = CHILD.with_overrides(seed=seed)
        child = save(emotion, fine_tune(base, poems, [], config), emotion, parent, config)
        promote = emotion != "fear"
        registry.register(
            emotion, child, parent=parent, promote=promote,
            promotion="" if promote else NOT_PROMOTED, **meta,
        )  # fmt: skip
    lora = CHILD.with_overrides(adapter="lora", learning_rate=3e-2)
    trust = save("trust", fine_tune(base, sonnets[20:60], [], lora), "trust", parent, lora)
    registry.register("trust", trust, parent=parent, **meta)
    other = build_scratch_model("scratch:tiny", sonnets[:10], root / "other-tokenizer")
    sadness = save("sadness", fine_tune(other, sonnets[:40], [], QUICK), "sadness", parent, QUICK)
    registry.register("sadness", sadness, parent=parent, **meta)
    base2 = save(
        "neutral2",
        fine_tune(init, sonnets[:60], [], QUICK.with_overrides(seed=9)),
        "neutral", "init", QUICK,
    )  # fmt: skip
    registry.register("neutral", base2, parent="scratch:tiny", **meta)
    anger = save("anger", fine_tune(base2, sonnets[:40], [], CHILD), "anger", "emoverse-neutral v2",
                 CHILD)  # fmt: skip
    registry.register("anger", anger, parent="emoverse-neutral v2", **meta)
    registry.register("surprise", folders["joy"], parent="scratch:tiny", **meta)
    rows = pa.Table.from_pylist(book_to_rows(1041, raw), schema=POEM_SCHEMA)
    write_version(tag_table(rows), RunPaths(data_dir).partitions)
    return Family(data_dir, folders)


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


# --- the recipe -------------------------------------------------------------------------------


def test_weights_are_bounded_and_parsed():
    assert parse_blend("joy=0.7, Fear=0.5") == {"joy": 0.7, "fear": 0.5}
    assert check_weights({"joy": 0, "fear": 3}) == {"joy": 0.0, "fear": 3.0}
    for text, message in [
        ("joy", "wants EMOTION=WEIGHT"),
        ("joy=lots", "weight of joy must be a number, got 'lots'"),
        ("joy=3.5", "weight of joy must be between 0 and 3, got 3.5"),
        ("joy=-1", "weight of joy must be between 0 and 3, got -1"),
        ("joy=1,joy=2", "names joy twice"),
        ("neutral=1", "names 'neutral'"),
        ("glee=1", "names 'glee'"),
        ("joy=1,fear=1,anger=1,trust=1", f"at most {MAX_BLEND_EMOTIONS} emotions, got 4"),
    ]:
        with pytest.raises(GenerationSettingError, match=r"^blend ") as caught:
            parse_blend(text)
        assert message in str(caught.value), text
    with pytest.raises(GenerationSettingError, match="at least one"):
        check_weights({})


def test_the_recipe_reads_the_children_and_the_base_they_were_trained_from(family):
    recipe = resolve_recipe(family.registry, {"joy": 0.7, "fear": 0.5})
    # neutral v2 is the champion now, but these children were trained from v1.
    assert family.registry.current("neutral")[0].version == 2
    assert recipe.base.version == 1 and Path(recipe.base.path) == family.folders["neutral1"]
    assert [(p.record.emotion, p.record.version, p.weight) for p in recipe.parts] == [
        ("joy", 1, 0.7),
        ("fear", 1, 0.5),
    ]
    assert recipe.describe() == (
        "emoverse-neutral v1 + 0.7 × (emoverse-joy v1 − base) + 0.5 × (emoverse-fear v1 − base)"
    )
    # fear has no champion: its newest version, with the usual warning.
    assert len(recipe.warnings) == 1 and NOT_PROMOTED in recipe.warnings[0]
    assert recipe.to_dict()["emotions"][1] == {"emotion": "fear", "version": 1, "weight": 0.5}


def test_children_of_other_bases_tokenizers_or_lineage_cannot_be_blended(family):
    with pytest.raises(EmoverseError) as caught:
        resolve_recipe(family.registry, {"joy": 1, "anger": 1})
    message = str(caught.value)
    assert "different bases" in message
    assert "emoverse-joy v1 from emoverse-neutral v1" in message
    assert "emoverse-anger v1 from emoverse-neutral v2" in message
    with pytest.raises(EmoverseError, match="tokenizer of emoverse-sadness v1 differs from that "
                       "of its base emoverse-neutral v1"):  # fmt: skip
        resolve_recipe(family.registry, {"joy": 1, "sadness": 0.5})
    with pytest.raises(EmoverseError, match=r"surprise v1 \(trained from 'scratch:tiny'\)"):
        resolve_recipe(family.registry, {"surprise": 0.5})


# --- exactness: strength 0 is the base, strength 1 the child ----------------------------------


def test_strength_0_is_the_base_and_1_the_child_exactly(family):
    base, joy = family.folders["neutral1"], family.folders["joy"]
    zero = materialize(resolve_recipe(family.registry, {"joy": 0}), family.blends)
    one = materialize(resolve_recipe(family.registry, {"joy": 1}), family.blends)
    both_zero = materialize(resolve_recipe(family.registry, {"joy": 0, "fear": 0}), family.blends)
    one_of_two = materialize(resolve_recipe(family.registry, {"joy": 1, "fear": 0}), family.blends)
    assert zero == both_zero == base and one == one_of_two == joy  # no merge: the folders
    assert not family.blends.exists() or not any(family.blends.iterdir())
    base_poems, joy_poems = generate_poems(base, **POEMS), generate_poems(joy, **POEMS)
    assert generate_poems(zero, **POEMS) == base_poems
    assert generate_poems(one, **POEMS) == joy_poems
    assert base_poems != joy_poems  # the invariants say something


def test_a_merged_strength_is_the_task_arithmetic_and_writes_other_poems(family):
    recipe = resolve_recipe(family.registry, {"joy": 0.5})
    folder = materialize(recipe, family.blends)
    assert folder.parent == family.blends and folder.name == recipe.key()
    base, joy = _state(family.folders["neutral1"]), _state(family.folders["joy"])
    merged = _state(folder)
    for name, value in merged.items():
        torch.testing.assert_close(value, base[name] + 0.5 * (joy[name] - base[name]))
    assert not torch.equal(merged["transformer.h.0.mlp.c_fc.weight"],
                           base["transformer.h.0.mlp.c_fc.weight"])  # fmt: skip
    half = generate_poems(folder, **POEMS)
    assert half != generate_poems(family.folders["neutral1"], **POEMS)
    assert half != generate_poems(family.folders["joy"], **POEMS)
    assert generate_poems(folder, **POEMS) == half  # fixed seed, same poems
    card = read_card_metadata(folder)
    assert card["emotion"] == "blend"
    assert card["recipe"]["formula"] == "emoverse-neutral v1 + 0.5 × (emoverse-joy v1 − base)"
    assert card["recipe"]["folders"]["joy"] == str(family.folders["joy"].resolve())
    assert (folder / "tokenizer.json").is_file() and (folder / "generation_config.json").is_file()
    assert not list(folder.glob("*.bin"))


def test_a_blend_adds_the_directions_and_is_merged_once(family, monkeypatch):
    recipe = resolve_recipe(family.registry, {"joy": 0.7, "fear": 0.5})
    folder = materialize(recipe, family.blends)
    base, joy, fear = (_state(family.folders[n]) for n in ("neutral1", "joy", "fear"))
    for name, value in _state(folder).items():
        expected = base[name] + 0.7 * (joy[name] - base[name]) + 0.5 * (fear[name] - base[name])
        torch.testing.assert_close(value, expected)

    def no_merge(*args, **kwargs):
        raise AssertionError("merged again")

    monkeypatch.setattr(blend, "merge_weights", no_merge)
    assert materialize(resolve_recipe(family.registry, {"joy": 0.7, "fear": 0.5}), family.blends) \
        == folder  # fmt: skip
    # Other weights, another folder.
    assert resolve_recipe(family.registry, {"joy": 0.7, "fear": 0.6}).key() != recipe.key()
    assert resolve_recipe(family.registry, {"fear": 0.5, "joy": 0.7}).key() == recipe.key()


def test_a_lora_child_dials_like_a_full_one(family):
    trust, _ = load_model(family.folders["trust"])  # its adapter merged into the base
    child = {k: v.detach() for k, v in trust.state_dict().items()}
    base = _state(family.folders["neutral1"])
    folder = materialize(resolve_recipe(family.registry, {"trust": 1.5}), family.blends)
    merged = _state(folder)
    delta = child["transformer.h.0.attn.c_attn.weight"] - base["transformer.h.0.attn.c_attn.weight"]
    assert delta.abs().max() > 0  # the adapter changed the attention
    for name, value in merged.items():
        torch.testing.assert_close(value, base[name] + 1.5 * (child[name] - base[name]))
    assert len(generate_poems(folder, **POEMS)) == 4
    # strength 1 is the adapter folder itself, loaded as before
    assert materialize(resolve_recipe(family.registry, {"trust": 1}), family.blends) == \
        family.folders["trust"]  # fmt: skip


def test_the_cache_keeps_the_newest_blends(tmp_path):
    for i, name in enumerate(["a", "b", "c"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    (tmp_path / ".a.lock").touch()
    removed = prune(tmp_path, keep=2)
    assert [p.name for p in removed] == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]


# --- the CLI ----------------------------------------------------------------------------------


def _cli(family, capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["generate", "--data-dir", str(family.data_dir), *args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _cli_poems(out: str) -> list[str]:
    return out.rstrip("\n").split("\n\n---\n\n")


def test_cli_strength_and_blend(family, capsys):
    flags = ("--prompt", "Love", "-n", "4", "--seed", "3", "--max-new-tokens", "24")
    code, out, err = _cli(family, capsys, "--emotion", "joy", "--strength", "0", *flags)
    assert code == 0, err
    assert _cli_poems(out) == generate_poems(family.folders["neutral1"], **POEMS)
    assert "# emoverse-neutral v1 + 0 × (emoverse-joy v1 − base), seed 3" in err
    code, out, err = _cli(family, capsys, "--emotion", "joy", "--strength", "1", *flags)
    assert _cli_poems(out) == generate_poems(family.folders["joy"], **POEMS)
    assert "# emoverse-joy v1, seed 3" in err  # the emotion's own model
    code, out, err = _cli(family, capsys, "--blend", "joy=1", *flags)
    assert _cli_poems(out) == generate_poems(family.folders["joy"], **POEMS)
    code, out, err = _cli(family, capsys, "--blend", "joy=0.7,fear=0.5", *flags)
    assert code == 0, err
    assert "emoverse-neutral v1 + 0.7 × (emoverse-joy v1 − base) + 0.5 × (emoverse-fear v1 " in err
    assert "emoverse: warning: emoverse-fear has no champion" in err
    folder = resolve_recipe(family.registry, {"joy": 0.7, "fear": 0.5}).key()
    assert _cli_poems(out) == generate_poems(family.blends / folder, **POEMS)
    code, out, err = _cli(family, capsys, "--emotion", "joy", "--strength", "2.5", *flags)
    assert code == 0 and "beyond 2 the poems lose their fluency" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--emotion", "joy", "--strength", "3.5"], "--strength must be between 0.0 and 3.0"),
        (["--emotion", "joy", "--strength", "much"], "--strength must be a number"),
        (["--blend", "joy=4"], "--blend weight of joy must be between 0 and 3, got 4"),
        (["--blend", "neutral=1"], "--blend names 'neutral'"),
        (["--emotion", "joy", "--blend", "fear=1"], "not allowed with argument --emotion"),
        (["--blend", "joy=1", "--strength", "2"], "--strength scales one --emotion"),
        (["--emotion", "neutral", "--strength", "0.5"], "--strength dials one of the eight"),
        (["--emotion", "joy", "--strength", "0.5", "--seed", "1"], None),
        (["--blend", "joy=0.5,anger=0.5"], "cannot blend children of different bases"),
        ([], "one of the arguments --emotion --blend is required"),
    ],
)
def test_cli_dial_errors_exit_2_on_one_line(family, capsys, args, message):
    code, out, err = _cli(family, capsys, *args, "--max-new-tokens", "4")
    if message is None:
        assert code == 0, err
        return
    assert code == cli.EXIT_BAD_INPUT and out == ""
    assert message in err and "Traceback" not in err, err


# --- the server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(family):
    app = create_app(family.data_dir, registry_ttl_s=0, cache_size=3)
    with running_app(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield app, client


def test_post_generate_dials_and_blends(family, server):
    app, client = server
    body = {**POEMS}
    zero = client.post("/generate", json={**body, "emotion": "joy", "strength": 0})
    assert zero.status_code == 200, zero.text
    answer = zero.json()
    assert answer["poems"] == generate_poems(family.folders["neutral1"], **POEMS)
    assert answer["recipe"]["formula"] == "emoverse-neutral v1 + 0 × (emoverse-joy v1 − base)"
    assert answer["recipe"]["base"] == {"emotion": "neutral", "version": 1}
    one = client.post("/generate", json={**body, "emotion": "joy", "strength": 1}).json()
    plain = client.post("/generate", json={**body, "emotion": "joy"}).json()
    assert one["poems"] == plain["poems"] == generate_poems(family.folders["joy"], **POEMS)
    assert plain["recipe"] is None and plain["version"] == 1
    mixed = client.post("/generate", json={**body, "blend": {"joy": 0.7, "fear": 0.5}})
    assert mixed.status_code == 200, mixed.text
    answer = mixed.json()
    key = resolve_recipe(family.registry, {"joy": 0.7, "fear": 0.5}).key()
    assert answer["poems"] == generate_poems(family.blends / key, **POEMS)
    assert answer["emotion"] == "joy" and answer["version"] == 1  # the leading emotion
    assert [(e["emotion"], e["version"], e["weight"]) for e in answer["recipe"]["emotions"]] == [
        ("joy", 1, 0.7),
        ("fear", 1, 0.5),
    ]
    assert "emoverse-fear has no champion" in answer["warning"]
    loads = app.state.models.loads
    again = client.post("/generate", json={**body, "blend": {"fear": 0.5, "joy": 0.7}}).json()
    assert again["poems"] == answer["poems"] and app.state.models.loads == loads  # cached
    strong = client.post("/generate", json={**body, "emotion": "joy", "strength": 2.5}).json()
    assert "beyond 2 the poems lose their fluency" in strong["warning"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"emotion": "joy", "strength": 3.5}, "strength: Input should be less than or equal to 3"),
        ({"emotion": "joy", "strength": -0.1}, "strength: Input should be greater than or equal"),
        ({"emotion": "joy", "strength": "x"}, "strength: Input should be a valid number"),
        ({"blend": {"joy": 4}}, "blend.joy: Input should be less than or equal to 3"),
        ({"blend": {"glee": 1}}, "blend names 'glee'"),
        ({"blend": {"neutral": 1}}, "blend names 'neutral'"),
        ({"blend": {"joy": 1, "fear": 1, "anger": 1, "trust": 1}}, "blend: Dictionary should"),
        ({"blend": {}}, "blend must name at least one emotion"),
        ({"emotion": "joy", "blend": {"fear": 1}}, "give either emotion (with strength) or blend"),
        ({"blend": {"joy": 1}, "strength": 2}, "give either emotion (with strength) or blend"),
        ({}, "give either emotion (with strength) or blend"),
        ({"emotion": "neutral", "strength": 0.5}, "strength dials one of the eight emotions"),
    ],
)
def test_bad_dials_are_a_422_naming_the_field(server, body, message):
    _, client = server
    response = client.post("/generate", json={**body, "max_new_tokens": 4})
    assert response.status_code == 422, response.text
    assert message in response.json()["message"], response.json()["message"]


def test_blending_children_of_other_bases_is_a_422_naming_the_versions(server):
    _, client = server
    response = client.post("/generate", json={"blend": {"joy": 0.5, "anger": 0.5}})
    assert response.status_code == 422
    assert "emoverse-anger v1 from emoverse-neutral v2" in response.json()["message"]


def test_merged_models_share_the_servers_model_cache(family, server):
    app, client = server
    models = app.state.models
    for w in (0.2, 0.3, 0.4, 0.6):
        response = client.post(
            "/generate", json={"emotion": "joy", "strength": w, "max_new_tokens": 4}
        )
        assert response.status_code == 200, response.text
    assert len(models._batchers) <= models.size  # four merged models, at most three loaded
    # Recipes remembered for the fast path hold no evicted model.
    loaded = list(models._batchers.values())
    assert all(batcher in loaded for _, _, batcher in models._dials.values())
    assert models._dials and {"joy": 0.2} not in [dict(w) for w in models._dials]


def test_a_repeated_recipe_skips_the_thread_pool_within_the_ttl(server, monkeypatch):
    app, client = server
    models = app.state.models
    monkeypatch.setattr(models, "ttl_s", 60.0)
    body = {"blend": {"joy": 0.9, "fear": 0.1}, "max_new_tokens": 4, "seed": 1}
    first = client.post("/generate", json=body).json()
    assert models.cached_dial({"joy": 0.9, "fear": 0.1}) is not None

    def no_resolve(weights):
        raise AssertionError("resolved again")

    monkeypatch.setattr(models, "dialled", no_resolve)
    second = client.post("/generate", json=body).json()
    assert second["poems"] == first["poems"] and second["recipe"] == first["recipe"]


def test_the_page_dials_and_blends_in_headless_chromium(family, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    from test_serve import _chromium

    _, client = server
    driver = _chromium()
    try:
        driver.get(str(client.base_url) + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#second option[value=joy]"))
        strength = driver.find_element(By.ID, "strength")
        assert strength.get_attribute("type") == "range"
        assert strength.get_attribute("value") == "1"
        assert float(strength.get_attribute("max")) == blend.FLUENT_MAX_STRENGTH
        Select(driver.find_element(By.ID, "emotion")).select_by_value("joy")
        assert not driver.find_element(By.ID, "second-weight").is_enabled()  # no second yet

        def write() -> str:
            driver.execute_script("document.getElementById('meta').textContent = ''")
            driver.find_element(By.ID, "write").click()
            return wait.until(lambda d: d.find_element(By.ID, "meta").text.startswith("emoverse")
                              and d.find_element(By.ID, "meta").text)  # fmt: skip

        def slide(element_id: str, value: float) -> None:
            driver.execute_script(
                "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                "e.dispatchEvent(new Event('input'));",
                element_id,
                str(value),
            )

        slide("strength", 0)
        assert driver.find_element(By.ID, "strength-value").text == "0"
        assert write().startswith("emoverse-neutral v1 + 0 × (emoverse-joy v1 − base), seed ")
        Select(driver.find_element(By.ID, "second")).select_by_value("fear")
        assert driver.find_element(By.ID, "second-weight").is_enabled()
        slide("strength", 0.7)
        slide("second-weight", 0.5)
        meta = write()
        assert meta.startswith(
            "emoverse-neutral v1 + 0.7 × (emoverse-joy v1 − base) "
            "+ 0.5 × (emoverse-fear v1 − base), seed "
        )
        assert driver.find_element(By.ID, "poem").text.strip()
        assert "emoverse-fear has no champion" in driver.find_element(By.ID, "warning").text
        # A second emotion from another base: the error reaches the reader.
        Select(driver.find_element(By.ID, "second")).select_by_value("anger")
        driver.find_element(By.ID, "write").click()
        error = wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert "cannot blend children of different bases" in error
    finally:
        driver.quit()


# --- measuring the dial -----------------------------------------------------------------------


def test_the_dial_measures_fidelity_and_fluency_at_each_strength(family):
    partitions = RunPaths(family.data_dir).partitions
    points = measure_dial(family.registry, "joy", partitions, family.blends,
                          strengths=(0, 1, 2), samples=4, max_new_tokens=16)  # fmt: skip
    assert [p.strength for p in points] == [0, 1, 2] and all(p.n == 4 for p in points)
    assert points[1].model == "emoverse-neutral v1 + 1 × (emoverse-joy v1 − base)"
    # Strength 1 is the child: its poems, judged and scored as the evaluation does.
    poems = generate_poems(family.folders["joy"], n=4, seed=0, max_new_tokens=16)
    for judge in ("nrc", "empath"):
        labels = label_texts(poems, **_tag_rule(partitions), lexicon=judge)
        assert points[1].share(judge).k == labels.count("joy")
    assert points[1].distinct_2 == distinct_n(poems, 2)
    assert points[1].sample_perplexity == pytest.approx(
        perplexity(family.folders["neutral1"], poems), rel=1e-5
    )
    assert points[0].sample_perplexity != points[2].sample_perplexity


def _point(strength: float, ppl: float, d2: float) -> DialPoint:
    share = {"k": 1, "n": 4, "share": 0.25, "low": 0.05, "high": 0.7}
    return DialPoint("joy", strength, "m", 4, {"nrc": share, "empath": share}, ppl, d2)


def test_fluency_breaks_where_perplexity_doubles_or_distinct_2_falls():
    points = [_point(0, 50, 0.8), _point(1, 60, 0.8), _point(1.5, 110, 0.75),
              _point(2, 130, 0.8), _point(3, 500, 0.5)]  # fmt: skip
    found = breaks(points)
    assert set(found) == {2, 3}
    assert "perplexity under the base 130 > 2x the child's 60" in found[2]
    assert "distinct-2 0.50 < 90% of the base's 0.80" in found[3]
    assert fluent_up_to(points) == 1.5
    assert fluent_up_to(points[:3]) == 1.5


def test_report_dial_writes_a_plot_and_a_table_per_emotion(family, capsys, tmp_path):
    dial = ["--dial", "--dial-samples", "4", "--dial-emotions", "joy,surprise"]
    code = cli.main(["report", "--data-dir", str(family.data_dir), "--out", str(tmp_path), *dial])
    assert code == 0, capsys.readouterr().err
    report = (tmp_path / "report.md").read_text()
    assert "## The dial: base + S × (child − base)" in report
    assert "### joy" in report and (tmp_path / "dial-joy.png").stat().st_size > 1000
    assert "| 0 | " in report and "| 3 | " in report  # strengths 0 to 3 in the table
    assert "- surprise: no dial (cannot dial or blend emoverse-surprise v1" in report


def test_the_family_report_still_imports_without_torch():
    """The training flow's report task imports it: the dial must not make it load torch."""
    import subprocess
    import sys

    code = "import sys, models.reports.family; assert 'torch' not in sys.modules"
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(repo)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
