"""Judging poems a user gives: the input read and checked, every judge's answer per poem, and
that answer as text. `emoverse judge` and `POST /judge` give the same answer.

* Input (`parse_poems`): UTF-8 text, either poems separated by blank lines or, when its first
  non-blank line starts with `{`, one JSON object per line with a `text` field (JSONL).
  Refused with one line naming the problem: empty input, binary input (a NUL byte, or not
  UTF-8), more than MAX_INPUT_BYTES or MAX_POEMS, a JSONL line that is no object with a
  non-empty string `text`.
* Answer (`judge_poems`): `{"judges": [...], "poems": [{"poem": i, "text": ..., "judges":
  {judge: {label, scores, valence}}}]}` (poems numbered from 1; `emoverse.judges.Judged.row`).
"""

import json
from collections.abc import Sequence
from typing import Any

from emoverse.emotions import EMOTIONS
from emoverse.errors import EmoverseError
from emoverse.judges import JUDGES, SCORE_KINDS, judge_texts

MAX_INPUT_BYTES = 1_000_000  # about 800 poems of the mirror's mean length
MAX_POEMS = 1_000  # NADE takes ~5-25 ms a poem on 2 cores: at most half a minute


def parse_poems(data: bytes, *, source: str = "input") -> list[str]:
    """The poems in `data` (module docstring), or an EmoverseError naming what is wrong with
    `source`."""
    if len(data) > MAX_INPUT_BYTES:
        raise EmoverseError(f"{source} is {len(data):,} bytes; at most {MAX_INPUT_BYTES:,}")
    if b"\0" in data:
        raise EmoverseError(f"{source} is binary (it holds NUL bytes), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EmoverseError(
            f"{source} is not UTF-8 text (byte {exc.start}); give poems as UTF-8"
        ) from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise EmoverseError(f"{source} is empty: give poems separated by blank lines, or JSONL")
    if first.lstrip().startswith("{"):
        poems = [_jsonl_text(line, n, source) for n, line in enumerate(lines, 1) if line.strip()]
    else:
        poems, current = [], []
        for line in [*lines, ""]:
            if line.strip():
                current.append(line.rstrip())
            elif current:
                poems.append("\n".join(current))
                current = []
    if len(poems) > MAX_POEMS:
        raise EmoverseError(f"{source} holds {len(poems):,} poems; at most {MAX_POEMS:,}")
    return poems


def _jsonl_text(line: str, number: int, source: str) -> str:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EmoverseError(f"{source} line {number}: not JSON ({exc.msg})") from None
    text = value.get("text") if isinstance(value, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise EmoverseError(f"{source} line {number}: needs a non-empty string field `text`")
    return text


def check_poems(poems: Sequence[str], *, source: str = "poems") -> list[str]:
    """Poems given as a list (HTTP): at least one, at most MAX_POEMS, none blank."""
    if not poems:
        raise EmoverseError(f"{source}: give at least one poem")
    if len(poems) > MAX_POEMS:
        raise EmoverseError(f"{source}: {len(poems):,} poems; at most {MAX_POEMS:,}")
    blank = next((i for i, poem in enumerate(poems, 1) if not poem.strip()), None)
    if blank is not None:
        raise EmoverseError(f"{source}: poem {blank} is blank")
    if "\0" in "".join(poems):
        raise EmoverseError(f"{source}: binary, not text (NUL characters)")
    return list(poems)


def judge_poems(poems: Sequence[str]) -> dict[str, Any]:
    """Every judge's label, eight scores and valence per poem (module docstring)."""
    judged = judge_texts(poems)
    return {
        "judges": list(JUDGES),
        "scores": {judge: SCORE_KINDS[judge] for judge in JUDGES},
        "poems": [
            {
                "poem": i + 1,
                "text": poem,
                "judges": {judge: judged[judge].row(i) for judge in JUDGES},
            }
            for i, poem in enumerate(poems)
        ],
    }


def answer_text(answer: dict[str, Any]) -> str:
    """The answer for people: per poem its first line, then one line per judge."""
    lines = []
    for entry in answer["poems"]:
        first = entry["text"].strip().splitlines()[0]
        lines.append(f"poem {entry['poem']}: {first[:60]}{'…' if len(first) > 60 else ''}")
        for judge, got in entry["judges"].items():
            scores = got["scores"]
            shown = " ".join(
                f"{e} {scores[e]:.2f}" if judge == "nade" else f"{e} {scores[e]}" for e in EMOTIONS
            )
            lines.append(f"  {judge:<7}{got['label']:<13}{got['valence']:<9}  {shown}")
    lines.append(
        "label: the judge's emotion (neutral: none stands out); valence: positive, negative or "
        "none; scores: " + ", ".join(f"{j} {k}" for j, k in answer["scores"].items())
    )
    return "\n".join(lines)
