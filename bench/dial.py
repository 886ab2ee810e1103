"""The dial's benchmark: what strength does to fidelity and fluency, and what a
dialled or blended model costs to serve.

    .venv/bin/python bench/dial.py [--books 8] [--emotions 2] [--samples 48]
        [--base-steps 400] [--child-steps 150] [--data-dir DIR] [--out bench/dial-report]
        [--gpt2-merge]

A small family is trained here (or reused from --data-dir when its registry has one): the
first --books books of the shared mirror's MANIFEST.tsv, tagged into partitions; a scratch:tiny
neutral base trained on every poem, and children fine-tuned from it on the --emotions largest
emotion partitions, registered with the base as their parent. Then:
- the dial: each child at strengths 0, 0.5, 1, 1.5, 2, 3, K=--samples poems each from one
  seed, fidelity under both judges and the fluency guard (poems' perplexity under the base,
  distinct-2), a table per emotion and where fluency breaks; plots go to --out;
- the merge: seconds to merge and save a new recipe (one emotion, and a blend of two);
- serving: the real app on loopback, one client, n=1 poems of 40 tokens: the first request of
  a plain child (a load) and of a new blend (a merge and a load), then the median latency of
  cached requests of each, in the same run;
- with --gpt2-merge, the merge at GPT-2 size: a scratch:gpt2 (124M) base and a child made of
  it plus noise, merged at 0.5 (weights untrained: the time depends on the size only).
The merged-model cache (`<data-dir>/models/blends/`) is emptied first, so merges are new.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)

import torch  # noqa: E402

from emoverse.emotions import EMOTIONS  # noqa: E402
from emoverse.paths import RunPaths  # noqa: E402

DEFAULT_MIRROR = REPO.parent / "shared" / "gutenberg"
BASE_PARENT = "emoverse-neutral v1"


def book_ids(mirror: Path, n: int) -> list[int]:
    lines = (mirror / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return sorted(int(line.split("\t")[0]) for line in lines if line.strip())[:n]


def train_family(
    paths: RunPaths, mirror: Path, books: int, n_emotions: int, steps: tuple[int, int]
) -> list[str]:
    """Partitions, a neutral base and `n_emotions` children, registered; the children's
    emotions."""
    import pyarrow as pa

    from emoverse.corpus import book_to_rows
    from emoverse.schema import POEM_SCHEMA
    from emoverse.tagging import tag_table, write_version
    from models.config import TrainConfig
    from models.folders.card import save_model
    from models.folders.model_folder import build_scratch_model
    from models.registry.model_registry import ModelRegistry
    from models.training.data import load_partition
    from models.training.loop import fine_tune

    rows = []
    for book in book_ids(mirror, books):
        found = list((mirror / "cache" / "epub" / str(book)).glob("pg*.txt"))
        if found:
            rows += book_to_rows(book, found[0].read_bytes())
    manifest = write_version(tag_table(pa.Table.from_pylist(rows, schema=POEM_SCHEMA)),
                             paths.partitions)  # fmt: skip
    splits = manifest["splits"]
    emotions = sorted(EMOTIONS, key=lambda e: -splits[e]["train"])[:n_emotions]
    texts = [r["text"] for r in rows]
    print(f"{len(book_ids(mirror, books))} books, {len(rows):,} poems; children: "
          + ", ".join(f"{e} ({splits[e]['train']} train poems)" for e in emotions))  # fmt: skip
    base_cfg = TrainConfig(batch_size=16, block_size=128, learning_rate=3e-3, warmup_steps=20,
                           epochs=20, max_steps=steps[0], patience=20)  # fmt: skip
    child_cfg = base_cfg.with_overrides(learning_rate=1e-3, warmup_steps=10, max_steps=steps[1])
    registry = ModelRegistry.for_data_dir(paths.data_dir)
    meta = {"data_fingerprint": "bench", "metrics": {}}
    started = time.perf_counter()
    init = build_scratch_model("scratch:tiny", texts, paths.models / "init")
    base = save_model(fine_tune(init, texts, [], base_cfg), paths.models / "neutral",
                      emotion="neutral", parent="scratch:tiny", config=base_cfg,
                      data_fingerprint="bench")  # fmt: skip
    registry.register("neutral", base, parent="scratch:tiny", **meta)
    for emotion in emotions:
        poems = list(load_partition(paths.partitions, emotion, "train")["text"])
        child = save_model(fine_tune(base, poems, [], child_cfg), paths.models / emotion,
                           emotion=emotion, parent=BASE_PARENT, config=child_cfg,
                           data_fingerprint="bench")  # fmt: skip
        registry.register(emotion, child, parent=BASE_PARENT, **meta)
    print(f"trained the family in {time.perf_counter() - started:.0f} s")
    return emotions


def gpt2_merge(paths: RunPaths) -> None:
    """Seconds to merge a 124M-parameter recipe (scratch:gpt2 shapes, untrained weights)."""
    from safetensors.torch import load_file, save_file

    from models.folders.model_folder import build_scratch_model
    from models.generation.blend import Ingredient, Recipe, merge_weights
    from models.registry.model_registry import ModelRecord
    from models.training.data import load_partition

    root = paths.data_dir / "gpt2-merge"
    texts = list(load_partition(paths.partitions, "neutral", "train")["text"])
    base = build_scratch_model("scratch:gpt2", texts, root / "base")
    child = Path(shutil.copytree(base, root / "child"))
    weights = load_file(str(child / "model.safetensors"))
    torch.manual_seed(0)
    noisy = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in weights.items()}  # fmt: skip
    save_file(noisy, str(child / "model.safetensors"), metadata={"format": "pt"})

    def record(emotion: str, folder: Path) -> ModelRecord:
        return ModelRecord(emotion, 1, str(folder), [], {}, BASE_PARENT, "", 0)

    recipe = Recipe(record("neutral", base), (Ingredient(record("joy", child), 0.5),))
    n = sum(v.numel() for v in weights.values())
    started = time.perf_counter()
    merge_weights(recipe, root / "merged")
    seconds = time.perf_counter() - started
    print(f"\n### Merging at GPT-2 size\n\n{n / 1e6:.0f}M weights (scratch:gpt2), one emotion "
          f"at 0.5: {seconds:.1f} s to load both, merge in float32 and save")  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


def median_ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror-dir", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument("--books", type=int, default=8)
    parser.add_argument("--emotions", type=int, default=2)
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--base-steps", type=int, default=400)
    parser.add_argument("--child-steps", type=int, default=150)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--out", type=Path, default=Path("bench/dial-report"))
    parser.add_argument("--gpt2-merge", action="store_true", help="also time a 124M merge")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine; the same for every measurement

    import httpx

    from apps.server import create_app, running_app
    from models.generation.blend import materialize, resolve_recipe
    from models.registry.model_registry import ModelRegistry
    from models.reports.dial import dial_table, fluent_up_to, measure_dial, plot_dial

    with tempfile.TemporaryDirectory() as tmp:
        paths = RunPaths(args.data_dir or Path(tmp) / "run")
        registry = ModelRegistry.for_data_dir(paths.data_dir)
        if registry.list("neutral"):
            emotions = [e for e in EMOTIONS if registry.list(e)][: args.emotions]
            print(f"reusing the family in {paths.data_dir}: {', '.join(emotions)}")
        else:
            steps = (args.base_steps, args.child_steps)
            emotions = train_family(paths, args.mirror_dir, args.books, args.emotions, steps)

        shutil.rmtree(paths.blends, ignore_errors=True)
        args.out.mkdir(parents=True, exist_ok=True)
        limits = {}
        for emotion in emotions:
            started = time.perf_counter()
            points = measure_dial(registry, emotion, paths.partitions, paths.blends,
                                  samples=args.samples, max_new_tokens=60)  # fmt: skip
            seconds = time.perf_counter() - started
            limits[emotion] = fluent_up_to(points)
            plot_dial(points, args.out / f"dial-{emotion}.png")
            print(f"\n### {emotion}: {points[2].model} (K={args.samples}, {seconds:.0f} s)\n")
            print("\n".join(dial_table(points)))
            print(f"\nfluent up to strength {limits[emotion]:g}")

        print("\n### Merging a new recipe\n")
        print("| recipe | merge and save |")
        print("|---|---:|")
        first, second = emotions[0], emotions[-1]
        for weights in ({first: 0.25}, {first: 0.35}, {first: 0.7, second: 0.5}):
            recipe = resolve_recipe(registry, weights)
            started = time.perf_counter()
            materialize(recipe, paths.blends)
            print(f"| {recipe.describe()} | {time.perf_counter() - started:.2f} s |")

        print("\n### Serving: a plain child against a blend, one client, n=1, 40 tokens\n")
        app = create_app(paths.data_dir)
        blend_weights = {first: 0.6, second: 0.4}
        with running_app(app) as url, httpx.Client(base_url=url, timeout=300) as client:

            def post(body: dict, seed: int) -> tuple[float, int]:
                started = time.perf_counter()
                body = {**body, "seed": seed, "n": 1, "max_new_tokens": 40}
                response = client.post("/generate", json=body)
                response.raise_for_status()
                return time.perf_counter() - started, len(response.json()["poems"][0])

            rows = []
            for name, body in (
                (f"{first} (its own model)", {"emotion": first}),
                (f"blend {first}=1 (the dial's path, the same model)", {"blend": {first: 1}}),
                (f"blend {first}=0.6, {second}=0.4", {"blend": blend_weights}),
            ):  # fmt: skip
                cold = post(body, 0)[0]
                warm = [post(body, i) for i in range(1, args.requests + 1)]
                rows.append((name, cold, [t for t, _ in warm], [c for _, c in warm]))
            print("| model | first request | cached requests (median) | p90 | mean poem |")
            print("|---|---:|---:|---:|---:|")
            for name, cold, warm, chars in rows:
                p90 = sorted(warm)[int(0.9 * (len(warm) - 1))]
                print(f"| {name} | {cold * 1000:.0f} ms | {median_ms(warm)} "
                      f"| {p90 * 1000:.0f} ms | {statistics.mean(chars):.0f} chars |")  # fmt: skip
            print("\n(poems end at eos or 40 tokens: the blend's poems are other poems, of "
                  "other lengths; the same model through the dial's path shows its overhead)")
        print(f"\nmodel loads by the server: {app.state.models.loads}")
        if args.gpt2_merge:
            gpt2_merge(paths)
        print("fluent up to: " + ", ".join(f"{e} {s:g}" for e, s in limits.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
