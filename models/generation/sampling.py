"""The one sampling loop: poems decoded in a batch over the KV cache, each row drawing its random
numbers from its own `torch.Generator`, so a row writes the same tokens alone or batched with
any others (the CLI, evaluation and the server all sample here).

Exactness. A row's logits must not depend on the other rows, to the bit:
- rows of one `Cohort` share a prompt length, so nothing is padded: on the CPU, attention over
  left padding rounds differently (measured: logits off by ~4e-7), so prompts of other lengths
  go to other cohorts (the server steps several cohorts side by side);
- a cohort never runs fewer than `MIN_ROWS` rows: CPU GEMM takes another kernel for 1 to 3
  rows (M < 4 in `addmm`), which rounds differently from the one it uses from 4 rows up, so
  a small cohort is topped up with filler rows whose tokens are thrown away;
- sampling works on each row alone (temperature, top-k, top-p, no-repeat n-grams, min length
  per row), in float64, with row-wise ops only;
- a row asked for a form (lines, stanzas, rhyme) carries its own `FormState`
  (models/generation/form.py), which masks that row's logits from its own tokens only.
`tests/apps/test_serve.py` checks that batched and alone give byte-identical poems.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.generation.form import FormState

# Fewest rows a forward pass runs (see the module docstring); fillers make up the rest.
MIN_ROWS = 4


@dataclass(frozen=True)
class RowSpec:
    """One poem to write: a prompt (token ids, bos first), its own seed and settings."""

    prompt_ids: tuple[int, ...]
    seed: int
    max_new_tokens: int
    min_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    no_repeat_ngram_size: int


class Row:
    """A poem being written. `tag` is the caller's (the server keeps its job and poem index)."""

    def __init__(self, spec: RowSpec, tag: Any = None, form: FormState | None = None):
        self.spec = spec
        self.tag = tag
        self.form = form  # lines, stanzas and rhyme kept as the row is written
        self.tokens: list[int] = list(spec.prompt_ids)
        self.new_tokens = 0
        self.finished = False  # reached eos or max_new_tokens
        self.cancelled = False  # set from any thread: the row is dropped before the next step
        self.generator = torch.Generator().manual_seed(spec.seed)
        self._seen: dict[tuple[int, ...], set[int]] = {}  # (n-1)-gram -> tokens that followed
        n = spec.no_repeat_ngram_size
        if n:
            for end in range(n, len(self.tokens) + 1):
                self._remember(end)

    def _remember(self, end: int) -> None:
        n = self.spec.no_repeat_ngram_size
        gram = self.tokens[end - n : end]
        self._seen.setdefault(tuple(gram[:-1]), set()).add(gram[-1])

    def banned(self) -> set[int]:
        """Tokens that would repeat an n-gram (`no_repeat_ngram_size`)."""
        n = self.spec.no_repeat_ngram_size
        if not n or len(self.tokens) + 1 < n:
            return set()
        return self._seen.get(tuple(self.tokens[len(self.tokens) - (n - 1) :]), set())

    def append(self, token: int, eos_id: int | None) -> None:
        self.tokens.append(token)
        self.new_tokens += 1
        if self.form is not None:
            self.form.advance(token)
        if self.spec.no_repeat_ngram_size and len(self.tokens) >= self.spec.no_repeat_ngram_size:
            self._remember(len(self.tokens))
        if token == eos_id or self.new_tokens >= self.spec.max_new_tokens:
            self.finished = True

    @property
    def active(self) -> bool:
        return not (self.finished or self.cancelled)


def sample_next(
    logits: torch.Tensor, rows: Sequence[Row], eos_id: int | None, suppress: Sequence[int] = ()
) -> list[int]:
    """The next token of each row from its last-position `logits` (rows x vocab), with each
    row's own settings and generator. Row-wise ops only, so a row's token does not depend on
    its neighbours."""
    logits = logits.detach().to("cpu", torch.float32).clone()
    at_rows: list[int] = []
    at_tokens: list[int] = []
    for r, row in enumerate(rows):
        banned = row.banned() | set(suppress)
        if row.new_tokens < row.spec.min_new_tokens and eos_id is not None:
            banned.add(eos_id)
        if row.form is not None:  # masks the row itself; returns what to forbid besides
            banned = row.form.constrain(logits[r], banned)
        at_rows += [r] * len(banned)
        at_tokens += banned
    if at_rows:
        logits[at_rows, at_tokens] = float("-inf")
    tokens = [0] * len(rows)
    vocab = logits.shape[-1]
    # Rows are filtered in groups of one top-k, so the candidates of a row (and their order,
    # ties included) depend on its own setting only: `topk` of k, or the whole vocabulary in a
    # stable sort (ties by token id) for top_k 0 or k >= vocab.
    groups: dict[int, list[int]] = {}
    for r, row in enumerate(rows):
        k = row.spec.top_k
        groups.setdefault(k if 0 < k < vocab else vocab, []).append(r)
    for k, members in groups.items():
        part = logits[members]
        if k < vocab:
            values, order = torch.topk(part, k, dim=-1, sorted=True)
        else:
            values, order = torch.sort(part, dim=-1, descending=True, stable=True)
        group = [rows[r] for r in members]
        picks = _draw(values, group)
        for r, pick, candidates in zip(members, picks, order.tolist(), strict=True):
            tokens[r] = candidates[pick]
    return tokens


def _draw(values: torch.Tensor, rows: Sequence[Row]) -> list[int]:
    """For each row, the rank (into its descending `values`) drawn with temperature and top-p,
    from the row's own generator."""
    scaled = values.double() / torch.tensor(
        [[row.spec.temperature] for row in rows], dtype=torch.float64
    )
    probs = torch.softmax(scaled, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # the mass of the likelier candidates
    top_p = torch.tensor([[row.spec.top_p] for row in rows], dtype=torch.float64)
    keep = before < top_p
    keep[:, 0] = True
    cumulative = torch.cumsum(torch.where(keep, probs, 0.0), dim=-1)
    draws = torch.stack(
        [torch.rand((), generator=row.generator, dtype=torch.float64) for row in rows]
    )
    target = draws * cumulative[:, -1]
    pick = (cumulative <= target[:, None]).sum(dim=-1).clamp(max=values.shape[-1] - 1)
    return pick.tolist()


class Cohort:
    """Rows with prompts of one length, decoded together over one KV cache. `step()` writes one
    token of every active row; finished and cancelled rows leave the batch (their cache rows
    are sliced out), so they stop costing compute."""

    def __init__(
        self, model: Any, rows: Sequence[Row], eos_id: int | None, suppress: Sequence[int] = ()
    ):
        lengths = {len(row.spec.prompt_ids) for row in rows}
        if len(lengths) != 1:
            raise ValueError(f"a cohort's prompts share one length, got {sorted(lengths)}")
        self.model = model
        self.rows = list(rows)  # the active rows, in cache order (fillers follow)
        self.eos_id = eos_id
        self.suppress = tuple(suppress)
        self.cache: Any = None
        self.steps = 0

    @property
    def done(self) -> bool:
        return not self.rows

    def _padded(self, per_row: list[Any]) -> list[Any]:
        return per_row + [per_row[0]] * (MIN_ROWS - len(per_row))

    def step(self) -> list[tuple[Row, int]]:
        """One token for every active row: [(row, token)]; a row whose token ends it has
        `finished` set and is gone from the next step."""
        self._drop([row for row in self.rows if row.cancelled])
        if not self.rows:
            return []
        device = self.model.device
        if self.cache is None:  # the prompts, all at once
            ids = torch.tensor(self._padded([list(row.tokens) for row in self.rows]), device=device)
        else:
            ids = torch.tensor(self._padded([[row.tokens[-1]] for row in self.rows]), device=device)
        with torch.inference_mode():
            out = self.model(input_ids=ids, cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.cache
        rows = list(self.rows)
        tokens = sample_next(out.logits[: len(rows), -1], rows, self.eos_id, self.suppress)
        for row, token in zip(rows, tokens, strict=True):
            row.append(token, self.eos_id)
        self.steps += 1
        self._drop([row for row in rows if row.finished])
        return list(zip(rows, tokens, strict=True))

    def _drop(self, gone: list[Row]) -> None:
        if not gone:
            return
        keep = [i for i, row in enumerate(self.rows) if row not in gone]
        self.rows = [self.rows[i] for i in keep]
        if self.cache is not None and self.rows:
            index = torch.tensor(self._padded(keep), device=self.model.device)
            self.cache.batch_select_indices(index)
        elif not self.rows:
            self.cache = None

    def run(self) -> None:
        """Step until every row has finished."""
        while not self.done:
            self.step()
