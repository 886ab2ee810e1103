"""Form a poem can be asked for: an exact number of lines, stanzas, a rhyme scheme; kept while
sampling, token by token, never by resampling whole poems.

    Form           lines, stanzas, rhyme ("AABB", "ABAB", ... or None): the ask, checked by
                   `Form.validate` (one message per broken rule)
    FormTables     what a tokenizer's vocabulary means for form (newline tokens, punctuation,
                   words per token) and the rhyme index: CMU Pronouncing Dictionary words (via
                   `pronouncing`) that the tokenizer writes in at most MAX_WORD_TOKENS tokens,
                   grouped by rhyming part, each group a trie of token sequences
    FormState      one row's place in its form; `constrain` masks the row's logits before the
                   draw (the model's own logits, restricted and so renormalised), `advance`
                   follows the token drawn

The rules, per line. Every token holding a newline is forbidden except at a line's end, and
end-of-sequence except after the last line (then forced). A line ends once it has MIN_WORDS
words (where the model puts a newline) or at its token cap (the budget `max_new_tokens` leaves
each line), with one newline, or two between stanzas. A line whose rhyme letter comes back
later (a leader) may end only on a word with as many reachable rhymes as lines follow it. A
line that rhymes with an earlier one (a follower) ends on a rhyme word: once it has as many
words as its leader less one (or nears its cap), its next word is spelt along the trie of the
leader's rhymes (with a leading space), then optional punctuation, then the newline. When
nothing rhymes (the leader ended on a word the dictionary lacks, at its cap), the follower is
a free line: `fallbacks` counts it. A prompt starts the first line, or is all of it when it
ends in a line break. The state depends on the row's own tokens only, so a row writes the
same poem alone or batched, and a seed reproduces it.

A scheme shorter than the poem repeats with fresh rhymes (ABAB over 8 lines: ABAB CDCD), so
lines must be a multiple of its length; lines must be a multiple of stanzas.
"""

import re
import threading
from dataclasses import dataclass
from typing import Any

import torch

from emoverse.errors import GenerationSettingError

MIN_WORDS = 3  # fewest words a line has before it may end by the model's choice
MAX_WORD_TOKENS = 4  # rhyme words the tokenizer writes in more tokens are out of reach
# The fewest content tokens a line is given: a rhyme word, punctuation and a word before them.
MIN_LINE_TOKENS = MAX_WORD_TOKENS + 2
PUNCTUATION = (",", ".", ";", ":", "!", "?")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_SCHEME = re.compile(r"[A-Z]+")
_INDEXES: dict[int, dict[str, "_Node"]] = {}  # rhyme indexes by vocabulary (see FormTables)
_INDEX_LOCK = threading.Lock()


def line_budget(lines: int, max_new_tokens: int) -> int:
    """Content tokens each line may take: what `max_new_tokens` leaves after two newline tokens
    per break and the end of sequence."""
    return (max_new_tokens - 1 - 2 * (lines - 1)) // lines


def tokens_needed(lines: int) -> int:
    """The smallest `max_new_tokens` that gives every line MIN_LINE_TOKENS."""
    return lines * MIN_LINE_TOKENS + 2 * (lines - 1) + 1


@dataclass(frozen=True)
class Form:
    """The form asked for. `rhyme` is None (or "none") for free verse."""

    lines: int
    stanzas: int = 1
    rhyme: str | None = None

    @classmethod
    def from_options(
        cls, lines: int | None, stanzas: int | None, rhyme: str | None
    ) -> "Form | None":
        """The form from flat options (None when none is asked); stanzas and rhyme need lines."""
        if lines is None:
            if stanzas is not None or (rhyme is not None and rhyme.lower() != "none"):
                raise GenerationSettingError(
                    "lines", "must be given with stanzas or rhyme (how many lines in all)"
                )
            return None
        scheme = None if rhyme is None or rhyme.strip().lower() == "none" else rhyme.strip()
        return cls(lines=lines, stanzas=1 if stanzas is None else stanzas, rhyme=scheme)

    def validate(self, max_new_tokens: int, prompt: str = "") -> "Form":
        """Return self, or raise GenerationSettingError naming the broken rule. The bounds of
        lines and stanzas are checked with the other options (generate.BOUNDS)."""
        if self.lines % self.stanzas:
            raise GenerationSettingError(
                "stanzas",
                f"must divide the lines evenly ({self.lines} lines in {self.stanzas} stanzas)",
            )
        if self.rhyme is not None:
            if not _SCHEME.fullmatch(self.rhyme):
                raise GenerationSettingError(
                    "rhyme", f"must be letters A to Z (like ABAB) or none, got {self.rhyme!r}"
                )
            if len(self.rhyme) > self.lines:
                raise GenerationSettingError(
                    "rhyme",
                    f"{self.rhyme} has {len(self.rhyme)} lines, more than the {self.lines} asked",
                )
            if self.lines % len(self.rhyme):
                raise GenerationSettingError(
                    "rhyme",
                    f"{self.rhyme} repeats over the poem, so lines must be a multiple of "
                    f"{len(self.rhyme)}, got {self.lines}",
                )
        if "\r" in prompt or "\n" in prompt.removesuffix("\n"):
            raise GenerationSettingError(
                "prompt",
                "must be the start of the first line, or the whole of it ending in one line "
                "break, when lines are asked",
            )
        if max_new_tokens < tokens_needed(self.lines):
            raise GenerationSettingError(
                "max_new_tokens",
                f"must be at least {tokens_needed(self.lines)} for {self.lines} lines "
                f"({MIN_LINE_TOKENS} tokens a line), got {max_new_tokens}",
            )
        return self

    def plan(self) -> list[tuple[int | None, int | None, str]]:
        """Per line: (its rhyme group, its leader line or None, what ends it: "line", "stanza"
        or "end"). Groups are numbered over the whole poem (the scheme repeats with fresh
        rhymes); a group's first line is its leader."""
        per_stanza = self.lines // self.stanzas
        out: list[tuple[int | None, int | None, str]] = []
        first: dict[int, int] = {}
        for i in range(self.lines):
            group = None
            if self.rhyme is not None:
                k = len(self.rhyme)
                group = (i // k) * 26 + (ord(self.rhyme[i % k]) - ord("A"))
            leader = first.setdefault(group, i) if group is not None else i
            end = "stanza" if (i + 1) % per_stanza == 0 else "line"
            end = "end" if i == self.lines - 1 else end
            out.append((group, None if leader == i else leader, end))
        return out


def end_word(text: str) -> str | None:
    """The last word of a line, lower case, without punctuation (None when it has none)."""
    words = _WORD.findall(text.lower())
    return words[-1] if words else None


def rhymes(word: str, other: str) -> bool:
    """Whether two words rhyme by the CMU Pronouncing Dictionary (a word does not rhyme with
    itself)."""
    import pronouncing

    return other.lower() in pronouncing.rhymes(word.lower())


class _Node:
    __slots__ = ("children", "word")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.word: str | None = None  # set where a word ends


class FormTables:
    """A tokenizer's vocabulary read for form, and its rhyme index (built once, lazily)."""

    def __init__(self, tokenizer: Any, eos_id: int | None):
        self.eos_id = eos_id
        size = len(tokenizer)
        texts = [tokenizer.decode([i]) for i in range(size)]
        self.texts = texts
        # Tokens that are newlines only, by how many; every other token holding one is never
        # written in a form (a line's end is one of these, nothing else).
        self.newlines: dict[int, set[int]] = {}
        self.with_newline: set[int] = set()
        for i, text in enumerate(texts):
            if "\n" in text or "\r" in text:
                self.with_newline.add(i)
                if set(text) == {"\n"}:
                    self.newlines.setdefault(len(text), set()).add(i)
        self.never = set(self.with_newline) | ({eos_id} if eos_id is not None else set())
        self.punctuation = {i for i, text in enumerate(texts) if text in PUNCTUATION}
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self._index: dict[str, _Node] | None = None
        self._rhymable: dict[tuple[str, int], bool] = {}
        self._any: dict[int, _Node] = {}

    def breaks(self, newlines: int) -> set[int]:
        """Tokens that may start (or continue) a break of `newlines` newlines."""
        return set().union(*(ids for n, ids in self.newlines.items() if n <= newlines))

    def _build(self) -> dict[str, _Node]:
        import pronouncing

        pronouncing.init_cmu()
        words = sorted(
            {w for w, _ in pronouncing.pronunciations if _WORD.fullmatch(w) and len(w) > 1}
        )
        encoded = self._tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
        index: dict[str, _Node] = {}
        for word, ids in zip(words, encoded, strict=True):
            if not ids or len(ids) > MAX_WORD_TOKENS or self.never.intersection(ids):
                continue
            for phones in pronouncing.phones_for_word(word):
                part = pronouncing.rhyming_part(phones)
                node = index.setdefault(part, _Node())
                for token in ids:
                    node = node.children.setdefault(token, _Node())
                node.word = word
        return index

    @property
    def index(self) -> dict[str, _Node]:
        with self._lock:
            if self._index is None:
                # Built once per vocabulary: a family's children share their base's tokenizer.
                key = hash((tuple(self.texts), self.eos_id))
                with _INDEX_LOCK:
                    if key not in _INDEXES:
                        _INDEXES[key] = self._build()
                    self._index = _INDEXES[key]
            return self._index

    def rhyme_trie(self, word: str | None, exclude: set[str]) -> _Node | None:
        """A trie of the reachable words that rhyme with `word` (none of `exclude`), or None
        when none does."""
        import pronouncing

        if word is None:
            return None
        index = self.index
        root = _Node()
        found = False
        for phones in pronouncing.phones_for_word(word):
            part = pronouncing.rhyming_part(phones)
            found |= _merge(root, index.get(part), exclude | {word})
        return root if found else None

    def rhymable(self, word: str | None, need: int = 1) -> bool:
        """Whether at least `need` reachable words other than `word` rhyme with it."""
        if word is None:
            return False
        if (word, need) not in self._rhymable:
            trie = self.rhyme_trie(word, set())
            self._rhymable[(word, need)] = trie is not None and _count_words(trie, need) >= need
        return self._rhymable[(word, need)]

    def any_rhymable(self, need: int = 1) -> _Node:
        """A trie of every reachable word `need` others rhyme with (a leader's last resort)."""
        if need not in self._any:
            root = _Node()
            for node in self.index.values():
                if _count_words(node, need + 1) >= need + 1:
                    _merge(root, node, set())
            self._any[need] = root
        return self._any[need]


def _merge(into: _Node, node: _Node | None, exclude: set[str]) -> bool:
    """Copy the words of `node` not in `exclude` into `into`; whether any was copied."""
    if node is None:
        return False
    copied = False
    if node.word is not None and node.word not in exclude:
        into.word = node.word
        copied = True
    for token, child in node.children.items():
        target = into.children.get(token) or _Node()
        if _merge(target, child, exclude):
            into.children[token] = target
            copied = True
    return copied


def _count_words(node: _Node, enough: int) -> int:
    count = int(node.word is not None)
    for child in node.children.values():
        if count >= enough:
            break
        count += _count_words(child, enough - count)
    return count


class FormState:
    """One row's place in its form (see the module docstring for the rules)."""

    def __init__(self, form: Form, tables: FormTables, max_new_tokens: int, prompt: str = ""):
        self.form = form
        self.tables = tables
        self.plan = form.plan()
        self.cap = line_budget(form.lines, max_new_tokens)
        self.line = 0
        self.line_tokens = 0
        self.line_text = prompt
        self.ends: list[str | None] = []  # each finished line's last word
        self.words_per_line: list[int] = []
        self.node: _Node | None = None  # in a rhyme word: where in its trie
        self.word_done = False  # a rhyme word written: punctuation or the break may follow
        self.punctuated = False
        self.breaking = 0  # newlines still to write in a break
        self.done = False
        self.fallbacks = 0  # followers written free: nothing rhymed within reach
        self._roots_step = False  # the last `allowed` asked for a rhyme word's first token
        self._trie_line: int | None = None
        self._trie: _Node | None = None
        if prompt.endswith("\n"):  # the first line, whole: the poem goes on from the next
            self.line_text = prompt[:-1]
            self._end_line()
            newlines = self._end_newlines()
            self.done = newlines == 0
            self.breaking = max(newlines - 1, 0)
            if not (self.done or self.breaking):
                self._next_line()

    @property
    def words(self) -> int:
        return len(self.line_text.split())

    def _end_newlines(self) -> int:
        return {"line": 1, "stanza": 2, "end": 0}[self.plan[self.line][2]]

    def _end_tokens(self) -> set[int]:
        n = self._end_newlines()
        if n == 0:
            return {self.tables.eos_id} if self.tables.eos_id is not None else set()
        return self.tables.breaks(n)

    def _follower_trie(self) -> _Node | None:
        group, leader, _ = self.plan[self.line]
        if leader is None:
            return None
        used = {w for i, w in enumerate(self.ends) if w is not None and self.plan[i][0] == group}
        return self.tables.rhyme_trie(self.ends[leader], used)

    def _followers(self) -> int:
        """How many later lines rhyme with this one (0 unless it leads its rhyme group)."""
        group, leader, _ = self.plan[self.line]
        if group is None or leader is not None:
            return 0
        return sum(g == group for g, _, _ in self.plan[self.line + 1 :])

    def allowed(self) -> tuple[set[int] | None, set[int]]:
        """(the only tokens allowed, or None for any; tokens forbidden besides)."""
        t = self.tables
        self._roots_step = False
        if self.done:
            return ({t.eos_id} if t.eos_id is not None else None), set()
        if self.breaking:
            return t.breaks(self.breaking), set()
        if self.node is not None:  # inside a rhyme word
            allowed = set(self.node.children)
            if self.node.word is not None:
                allowed |= t.punctuation | self._end_tokens()
            return allowed, set()
        if self.word_done:  # after the rhyme word (and its punctuation)
            if self.punctuated:
                return self._end_tokens(), set()
            return t.punctuation | self._end_tokens(), set()
        room = self.cap - self.line_tokens
        if self._leads_to_rhyme():
            trie = self._trie
            _, leader, _ = self.plan[self.line]
            target = max(MIN_WORDS, self.words_per_line[leader] - 1) if leader is not None else 0
            if room <= MAX_WORD_TOKENS + 1 or (leader is not None and self.words >= target):
                self._roots_step = True  # the token drawn starts the rhyme word
                return set(trie.children), set()
            need = self._followers()
            if need and self.words >= MIN_WORDS and t.rhymable(end_word(self.line_text), need):
                return None, t.never - self._end_tokens()
            return None, set(t.never)
        if room <= 0:
            return self._end_tokens(), set()
        if self.words >= MIN_WORDS:
            return None, t.never - self._end_tokens()
        return None, set(t.never)

    def _leads_to_rhyme(self) -> bool:
        """Whether this line ends along a trie (a follower with rhymes in reach, or a leader);
        sets `self._trie`. Cached per line."""
        if self._trie_line != self.line:
            self._trie_line = self.line
            self._trie = None
            _, leader, _ = self.plan[self.line]
            if leader is not None:
                self._trie = self._follower_trie()
                if self._trie is None:
                    self.fallbacks += 1
            elif self._followers():  # enough rhymes for every line that follows
                self._trie = self.tables.any_rhymable(self._followers())
        return self._trie is not None

    def constrain(self, logits: torch.Tensor, banned: set[int]) -> set[int]:
        """Mask one row's `logits` (in place) to the tokens the form allows, and return the
        tokens still to forbid. `banned` (repeated n-grams, suppressed tokens) yields where it
        would leave nothing allowed."""
        allowed, forbidden = self.allowed()
        if allowed is None:
            return banned | forbidden
        keep = sorted(allowed - banned) or sorted(allowed)
        kept = logits[keep].clone()
        logits.fill_(float("-inf"))
        logits[keep] = kept
        return set()

    def advance(self, token: int) -> None:
        """Follow the token the row drew."""
        t = self.tables
        if self.done:
            return
        if self.breaking:
            self.breaking -= max(n for n, ids in t.newlines.items() if token in ids)
            if not self.breaking:
                self._next_line()
            return
        if token in t.with_newline or token == t.eos_id:
            self._end_line()
            if token == t.eos_id:
                self.done = True
                return
            count = max(n for n, ids in t.newlines.items() if token in ids)
            self.breaking = self._end_newlines() - count
            if not self.breaking:
                self._next_line()
            return
        self.line_tokens += 1
        self.line_text += t.texts[token]
        if self.node is not None:
            if token in self.node.children:
                self.node = self.node.children[token]
                return
            self.node, self.word_done, self.punctuated = None, True, True  # punctuation
            return
        if self.word_done:
            self.punctuated = True
            return
        if self._roots_step and self._trie is not None and token in self._trie.children:
            self.node = self._trie.children[token]

    def _end_line(self) -> None:
        self.ends.append(end_word(self.line_text))
        self.words_per_line.append(self.words)

    def _next_line(self) -> None:
        self.line += 1
        self.line_tokens = 0
        self.line_text = ""
        self.node, self.word_done, self.punctuated = None, False, False
