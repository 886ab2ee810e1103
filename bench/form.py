"""What form costs: per emotion of an already-trained family, the same requests with and without
form (lines, stanzas, a rhyme scheme: models/generation/form.py).

    .venv/bin/python bench/form.py --models-dir DIR [--partitions DIR]
        [--emotions joy,sadness,...] [--samples 8] [--lines 4] [--schemes AABB,ABAB,ABBA,AAAA]
        [--max-new-tokens 64]

Each emotion's child is the newest `run-*` folder under `<models-dir>/<emotion>/`, the base
(the fluency judge) the newest under `<models-dir>/neutral/`. Per emotion, K=--samples poems
from seed 0 free, then the same K with `--lines` lines in two stanzas (one when lines < 4) for
each scheme. Per row: the exact line count, the share of the scheme's rhyme pairs (a line and
its scheme's earlier line) whose end words rhyme by the CMU Pronouncing Dictionary (fallbacks,
where nothing rhymed within reach, count as misses), fidelity (the share of poems the
project's judges, models.records.JUDGES, label with the emotion, by the partitions' own tag
rule), perplexity of the poems under the base, and seconds per poem. Then three rhyming poems
per scheme (every pair rhymes).
"""

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from emoverse.emotions import EMOTIONS  # noqa: E402


def newest(folder: Path) -> Path | None:
    runs = sorted(folder.glob("run-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def pairs(scheme: str, lines: int) -> list[tuple[int, int]]:
    """(leader, follower) line pairs the scheme asks to rhyme."""
    k = len(scheme)
    out = []
    for i in range(lines):
        first = scheme.index(scheme[i % k]) + (i // k) * k
        if first != i:
            out.append((first, i))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--partitions", type=Path, default=None)
    parser.add_argument("--emotions", default=",".join(EMOTIONS))
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--lines", type=int, default=4)
    parser.add_argument("--schemes", default="AABB,ABAB,ABBA,AAAA")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared machine; the same for every measurement

    from emoverse.judges import judge_texts
    from models.evaluation.evaluate import _tag_rule, score_perplexity
    from models.folders.model_folder import load_model
    from models.generation.form import end_word, rhymes
    from models.generation.generate import GenerationRequest, PoemGenerator
    from models.records import JUDGES

    partitions = args.partitions or args.models_dir.parent / "partitions"
    rule = _tag_rule(partitions)
    base = newest(args.models_dir / "neutral")
    if base is None:
        raise SystemExit(f"no run-* base under {args.models_dir / 'neutral'}")
    judge = load_model(base)
    schemes = args.schemes.split(",")
    stanzas = 2 if args.lines >= 4 and args.lines % 2 == 0 else 1
    print(f"base (fluency judge): {base}")
    header = "| emotion | form | lines exact | rhyme pairs | fallbacks | "
    header += " | ".join(f"fidelity {j}" for j in JUDGES) + " | ppl (base) | s/poem |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rhyming: dict[str, list[str]] = {s: [] for s in schemes}
    totals: dict[str, list[int]] = {s: [0, 0, 0, 0] for s in schemes}  # rhymed, pairs, exact, n
    for emotion in args.emotions.split(","):
        child = newest(args.models_dir / emotion)
        if child is None:
            print(f"| {emotion} | no model under {args.models_dir / emotion} |", flush=True)
            continue
        generator = PoemGenerator(child)
        tables = generator.form_tables()  # built once per vocabulary, not timed
        for need in (1, 2, 3):
            tables.any_rhymable(need)
        asks = [("free", None)] + [(s, s) for s in schemes]
        for name, scheme in asks:
            form = {} if scheme is None else {"lines": args.lines, "stanzas": stanzas}
            request = GenerationRequest(
                n=args.samples, seed=0, max_new_tokens=args.max_new_tokens, rhyme=scheme, **form
            )
            started = time.perf_counter()
            rows = generator.rows(request)
            generator.cohort(rows).run()
            seconds = (time.perf_counter() - started) / args.samples
            poems = [generator.text(row) for row in rows]
            judged = judge_texts(poems, JUDGES, rule=rule)
            fidelity = [f"{judged[j].labels.count(emotion) / len(poems):.0%}" for j in JUDGES]
            ppl = score_perplexity(*judge, poems)
            exact = rhymed = asked = fallbacks = 0
            for row, poem in zip(rows, poems, strict=True):
                lines = [line for line in poem.split("\n") if line.strip()]
                if scheme is None:
                    continue
                exact += len(lines) == args.lines
                fallbacks += row.form.fallbacks
                ok = 0
                for a, b in pairs(scheme, args.lines):
                    if len(lines) == args.lines:
                        first, second = end_word(lines[a]), end_word(lines[b])
                        ok += bool(first and second and rhymes(first, second))
                    asked += 1
                rhymed += ok
                if ok == len(pairs(scheme, args.lines)) and len(rhyming[scheme]) < 3:
                    rhyming[scheme].append(f"{emotion}:\n{poem}")
            if scheme is None:
                cells = ["-", "-", "-"]
            else:
                cells = [
                    f"{exact}/{len(poems)}",
                    f"{rhymed}/{asked} ({rhymed / asked:.0%})",
                    str(fallbacks),
                ]
                for i, value in enumerate((rhymed, asked, exact, len(poems))):
                    totals[scheme][i] += value
            print(
                f"| {emotion} | {name} | " + " | ".join(cells) + " | " + " | ".join(fidelity)
                + f" | {ppl:.0f} | {seconds:.2f} |",
                flush=True,
            )  # fmt: skip
    print("\n| scheme | rhyme pairs | lines exact |")
    print("|---|---:|---:|")
    for scheme, (rhymed, asked, exact, n) in totals.items():
        print(f"| {scheme} | {rhymed}/{asked} ({rhymed / max(asked, 1):.0%}) | {exact}/{n} |")
    for scheme, poems in rhyming.items():
        print(f"\n### {scheme}\n")
        for poem in poems:
            print("```\n" + poem + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
