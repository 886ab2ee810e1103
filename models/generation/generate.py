"""Sampling poems from a saved model folder.

`PoemGenerator` holds one loaded model and its tokenizer, so a server can keep it in a cache;
`generate_poems` is the one-shot form (load, generate, drop). Both sample with the KV cache
through `models.generation.sampling` (one batch of `n` poems per call), and give the same poems for
the
same seed: poem `i` of a request with seed `s` draws from its own generator, seeded
`s * ROW_SEED_STRIDE + i`, so it is the same poem whatever else shares its batch.
"""

import json
import re
import threading
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from emoverse.emotions import CONTROL_TOKENS
from emoverse.errors import EmoverseError, GenerationSettingError
from models.config import MAX_NEW_TOKENS, NO_REPEAT_NGRAM_SIZE, TEMPERATURE, TOP_K, TOP_P
from models.device import pick_device
from models.folders.model_folder import ADAPTER_CONFIG, REBUILD_HINT, load_model, verify_weights
from models.generation.form import Form, FormState, FormTables
from models.generation.sampling import Cohort, Row, RowSpec

# (lowest, highest) allowed value of every numeric option, in one place: the CLI's parsers
# and the server's request model read their bounds from here.
BOUNDS: dict[str, tuple[float, float]] = {
    "n": (1, 256),
    "seed": (0, 2**31 - 1),
    "max_new_tokens": (1, 1024),
    "min_new_tokens": (0, 1024),
    "temperature": (0.05, 5.0),  # 0 would divide the logits by zero; greedy is not offered
    "top_k": (0, 1000),  # 0: no top-k filter
    "top_p": (0.01, 1.0),  # 1: no nucleus filter
    "no_repeat_ngram_size": (0, 16),  # 0: repeats allowed
    # An emotion's dial (models/generation/blend.py): 0 the base, 1 the child, above 1 past it.
    "strength": (0.0, 3.0),
    # Form (models/generation/form.py): an exact number of lines, split into stanzas.
    "lines": (1, 64),
    "stanzas": (1, 16),
}
MAX_PROMPT_CHARS = 2000
_CONTROL_TEXT = re.compile("|".join(re.escape(token) for token in CONTROL_TOKENS))
# Weight files that unpickle on load, and so can run code: never loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

# Poem i of a request with seed s samples from a generator seeded s * ROW_SEED_STRIDE + i:
# distinct for every (seed, poem) pair, as n never exceeds the stride.
ROW_SEED_STRIDE = int(BOUNDS["n"][1])


def _check_bounds(name: str, value: Any, *, integer: bool) -> None:
    lo, hi = BOUNDS[name]
    kind = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if integer else "a number"
        raise GenerationSettingError(name, f"must be {what}, got {value!r}")
    if not lo <= value <= hi:
        raise GenerationSettingError(
            name, f"must be between {_num(lo)} and {_num(hi)}, got {value}"
        )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class SamplingSettings:
    """How each next token is drawn; the defaults are models/config.py's."""

    temperature: float = TEMPERATURE
    top_k: int = TOP_K
    top_p: float = TOP_P
    no_repeat_ngram_size: int = NO_REPEAT_NGRAM_SIZE

    def validate(self) -> "SamplingSettings":
        """Return self, or raise GenerationSettingError naming the option and its range."""
        _check_bounds("temperature", self.temperature, integer=False)
        _check_bounds("top_k", self.top_k, integer=True)
        _check_bounds("top_p", self.top_p, integer=False)
        _check_bounds("no_repeat_ngram_size", self.no_repeat_ngram_size, integer=True)
        return self


@dataclass(frozen=True)
class GenerationRequest:
    """One batch of poems: `n` poems starting with `prompt`, sampled from `seed`."""

    prompt: str = ""
    n: int = 1
    seed: int = 0
    max_new_tokens: int = MAX_NEW_TOKENS
    # An undertrained model may end a poem at once; this many tokens come first, always.
    min_new_tokens: int = 8
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    # The conditional model's control token (`<|joy|>`), put before the poem's bos.
    control: str | None = None
    # Form (models/generation/form.py): exact lines, stanzas (an even split), a rhyme scheme
    # ("ABAB", ... or "none"); None: free.
    lines: int | None = None
    stanzas: int | None = None
    rhyme: str | None = None

    @property
    def form(self) -> Form | None:
        """The form asked for, or None (its rules are checked by `validate`)."""
        return Form.from_options(self.lines, self.stanzas, self.rhyme)

    @classmethod
    def from_options(cls, **options: Any) -> "GenerationRequest":
        """A request from flat options, as CLI flags and HTTP bodies give them (`prompt`, `n`,
        `seed`, `max_new_tokens`, `temperature`, `top_k`, `top_p`, `no_repeat_ngram_size`,
        `lines`, `stanzas`, `rhyme`)."""
        sampling = {f.name: options.pop(f.name) for f in fields(SamplingSettings)}
        return cls(**options, sampling=SamplingSettings(**sampling))

    def validate(self) -> "GenerationRequest":
        """Return self, or raise GenerationSettingError naming the option and its range.
        The model's context is checked by `PoemGenerator.generate`, which knows it."""
        if not isinstance(self.prompt, str):
            raise GenerationSettingError("prompt", f"must be text, got {self.prompt!r}")
        try:
            self.prompt.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: undecodable bytes or a broken escape
            raise GenerationSettingError(
                "prompt", "is not valid UTF-8 text (undecodable bytes or a lone surrogate)"
            ) from None
        if self.control is not None and self.control not in CONTROL_TOKENS:
            raise GenerationSettingError(
                "control", f"must be one of {', '.join(CONTROL_TOKENS)}, got {self.control!r}"
            )
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise GenerationSettingError(
                "prompt", f"must be at most {MAX_PROMPT_CHARS} characters, got {len(self.prompt)}"
            )
        for f in fields(self):
            if f.name in BOUNDS and getattr(self, f.name) is not None:
                _check_bounds(f.name, getattr(self, f.name), integer=True)
        self.sampling.validate()
        if self.rhyme is not None and not isinstance(self.rhyme, str):
            raise GenerationSettingError("rhyme", f"must be text, got {self.rhyme!r}")
        form = self.form
        if form is not None:
            form.validate(self.max_new_tokens, self.prompt)
        return self


def check_safetensors_only(model_dir: Path) -> None:
    """Refuse a model folder whose weights are not safetensors: pickled weights run code when
    loaded. An adapter folder's base, when it is a local folder, must pass too."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise EmoverseError(f"model folder {model_dir} is missing; {REBUILD_HINT}")
    adapter = model_dir / ADAPTER_CONFIG
    if adapter.exists():
        # PEFT loads adapter_model.bin (a pickle) when adapter_model.safetensors is absent,
        # whatever other .safetensors file sits beside it.
        pickled = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled or not (model_dir / "adapter_model.safetensors").is_file():
            found = f" (found {', '.join(pickled)})" if pickled else ""
            raise EmoverseError(
                f"adapter folder {model_dir} must hold adapter_model.safetensors and no pickled "
                f"weights{found}; refusing to load"
            )
    if not any(model_dir.glob("*.safetensors")):
        pickled = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        found = f" (found {', '.join(pickled)})" if pickled else ""
        raise EmoverseError(
            f"model folder {model_dir} holds no safetensors weights{found}; refusing to load"
        )
    if adapter.exists():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path") or ""
        if base and Path(base).is_dir():
            check_safetensors_only(Path(base))


def _looks_like_a_path(source: str) -> bool:
    return Path(source).is_absolute() or source.startswith(("./", "../", "~"))


_BROKEN = "\ufffd"  # what a byte sequence that is no UTF-8 character decodes to


class PoemGenerator:
    """One loaded model and tokenizer, ready to write poems. Thread-safe: every row samples
    from its own generator, so generations may run side by side (or batched together, as the
    server does with `rows` and `models.generation.sampling.Cohort`)."""

    def __init__(self, model_dir: str | Path, weights: dict[str, Any] | None = None):
        """`weights`: the digests the registry recorded for the folder (else its card's)."""
        self.model_dir = str(model_dir)
        if Path(model_dir).exists() or _looks_like_a_path(str(model_dir)):
            # A local folder (a hub id loads safetensors only anyway); a registered folder
            # that was deleted is a missing folder, not a hub id to try.
            check_safetensors_only(Path(model_dir))
            verify_weights(Path(model_dir), weights)
        self.model, self.tokenizer = load_model(model_dir)
        self.model.to(pick_device()).eval()  # the GPU where there is one (evaluation, serving)
        config = self.model.config
        self.context: int | None = getattr(config, "n_positions", None) or getattr(
            config, "max_position_embeddings", None
        )
        self.eos_id: int | None = self.tokenizer.eos_token_id
        # A fast tokenizer may refuse ("Already borrowed") to encode in one thread while it
        # decodes in another (the server's event loop and its worker): one at a time.
        self._tokenizer_lock = threading.Lock()
        # The saved generation config suppresses the pad token where it is its own token;
        # a conditional model's control tokens are never written either (only prompted with),
        # whatever an older generation config says.
        vocab = self.tokenizer.get_vocab()
        self.controls: dict[str, int] = {t: vocab[t] for t in CONTROL_TOKENS if t in vocab}
        suppressed = getattr(self.model.generation_config, "suppress_tokens", None) or ()
        self.suppress: tuple[int, ...] = tuple(
            dict.fromkeys([*suppressed, *self.controls.values()])
        )
        self._form_tables: FormTables | None = None  # built on the first form asked for

    def form_tables(self) -> FormTables:
        """The vocabulary read for form, and the rhyme index (built once, then kept)."""
        with self._tokenizer_lock:
            if self._form_tables is None:
                self._form_tables = FormTables(self.tokenizer, self.eos_id)
                _ = self._form_tables.index  # it encodes words: under the lock, like any encoding
            tables = self._form_tables
        return tables

    def prompt_ids(self, prompt: str, control: str | None = None) -> list[int]:
        # Poems were trained as `bos + text + eos` (`<|label|> bos + text + eos` for the
        # conditional model), so a bos starts a fresh poem.
        with self._tokenizer_lock:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if control is None:
            return [self.tokenizer.bos_token_id, *ids]
        if control not in self.controls:
            raise GenerationSettingError(
                "model",
                f"{self.model_dir} has no control token {control}; only the conditional model "
                "is told its emotion by one",
            )
        return [self.controls[control], self.tokenizer.bos_token_id, *ids]

    def check(self, request: GenerationRequest) -> list[int]:
        """Validate `request` against the option bounds and this model's context; return the
        prompt's token ids."""
        request.validate()
        ids = self.prompt_ids(request.prompt, request.control)
        if self.context is not None:
            room = self.context - len(ids)
            if room < 1:
                raise GenerationSettingError(
                    "prompt",
                    f"is {len(ids) - 1} tokens; this model's context of {self.context} tokens "
                    "leaves no room for the poem",
                )
            if request.max_new_tokens > room:
                raise GenerationSettingError(
                    "max_new_tokens",
                    f"must be at most {room} with this prompt (context {self.context} tokens, "
                    f"prompt {len(ids)}), got {request.max_new_tokens}",
                )
        return ids

    def rows(self, request: GenerationRequest, tag: Any = None) -> list[Row]:
        """The request's `n` poems as rows to sample (validated first); row i has tag
        `(tag, i)`."""
        ids = tuple(self.check(request))
        s = request.sampling
        form = request.form
        tables = self.form_tables() if form is not None else None

        def state() -> FormState | None:
            if form is None or tables is None:
                return None
            return FormState(form, tables, request.max_new_tokens, request.prompt)

        return [
            Row(
                RowSpec(
                    prompt_ids=ids,
                    seed=request.seed * ROW_SEED_STRIDE + i,
                    max_new_tokens=request.max_new_tokens,
                    min_new_tokens=min(request.min_new_tokens, request.max_new_tokens),
                    temperature=s.temperature,
                    top_k=s.top_k,
                    top_p=s.top_p,
                    no_repeat_ngram_size=s.no_repeat_ngram_size,
                ),
                tag=(tag, i),
                form=state(),
            )
            for i in range(request.n)
        ]

    def cohort(self, rows: list[Row]) -> Cohort:
        """A batch of rows whose prompts share one length."""
        return Cohort(self.model, rows, self.eos_id, self.suppress)

    def text(self, row: Row, *, strip: bool = True) -> str:
        """The poem a row has written so far (its prompt included, special tokens, control
        tokens among them, left out). A byte-level model can write bytes that are no UTF-8
        character (a short run's poems often do): they decode to U+FFFD and are left out, never
        shown. While writing (`strip=False`), a U+FFFD at the very end stays: it may be half a
        character whose rest is still to come (the server's stream waits for it)."""
        with self._tokenizer_lock:
            text = self.tokenizer.decode(row.tokens[1:], skip_special_tokens=True)
        if self.controls:  # never shown, even spelt out in plain characters
            text = _CONTROL_TEXT.sub("", text)
        if row.form is not None:  # a line's first word comes with its space: not shown
            text = "\n".join(line.strip() for line in text.split("\n"))
        if strip:
            return text.replace(_BROKEN, "").strip()
        body = text.rstrip(_BROKEN)
        return body.replace(_BROKEN, "") + text[len(body) :]

    def generate(self, request: GenerationRequest) -> list[str]:
        """`request.n` poems, each starting with the prompt. The same request (seed included)
        gives the same poems, alone or batched with others."""
        rows = self.rows(request)
        self.cohort(rows).run()
        return [self.text(row) for row in rows]


def generate_poems(
    model_dir: str | Path,
    *,
    prompt: str = "",
    n: int = 1,
    seed: int = 0,
    max_new_tokens: int = 120,
    min_new_tokens: int = 8,
    sampling: SamplingSettings | None = None,
    weights: dict[str, Any] | None = None,
    lines: int | None = None,
    stanzas: int | None = None,
    rhyme: str | None = None,
) -> list[str]:
    """`n` poems starting with `prompt`, sampled with the default (or given) settings.
    The same seed gives the same poems; none ends before `min_new_tokens`, so an undertrained
    model cannot answer with an empty poem. `lines`, `stanzas` and `rhyme` ask for a form
    (models/generation/form.py)."""
    request = GenerationRequest(
        prompt=prompt,
        n=n,
        seed=seed,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        lines=lines,
        stanzas=stanzas,
        rhyme=rhyme,
    )
    if sampling is not None:
        request = replace(request, sampling=sampling)
    return PoemGenerator(model_dir, weights).generate(request)
