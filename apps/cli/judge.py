"""`emoverse judge [FILE|-] [--json]`: the three judges over poems a user gives (blank-line
separated or JSONL), per poem each judge's label, eight scores and valence; the same answer as
`POST /judge` (emoverse/judges/answer.py). Needs no data dir."""

import argparse
import json
import sys
from pathlib import Path

from emoverse.errors import EmoverseError


def judge(args: argparse.Namespace) -> int:
    from emoverse.judges.answer import MAX_INPUT_BYTES, answer_text, judge_poems, parse_poems

    if args.file == "-":
        source, data = "stdin", sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        source, path = args.file, Path(args.file)
        if not path.is_file():
            raise EmoverseError(f"{source}: no such file")
        with path.open("rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)  # one byte over the limit is enough to refuse
    answer = judge_poems(parse_poems(data, source=source))
    print(json.dumps(answer, indent=2, ensure_ascii=False) if args.json else answer_text(answer))
    return 0
