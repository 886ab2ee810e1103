"""Word tokens as TextBlob's `words` gives NRCLex's users, line by line, fast.

The definition (the reference, `reference_tokens`): every line of a poem (`str.splitlines`)
goes through `nltk.tokenize.NLTKWordTokenizer().tokenize`, the word tokenizer behind
`nltk.word_tokenize` and so behind TextBlob's `words` (it splits typographic quotes,
apostrophes and dashes: "love’s" -> `love ’ s`, "come—to" -> `come — to`); of its tokens
TextBlob keeps those with something left after stripping ASCII punctuation from the ends,
stripped, except that a token starting with an apostrophe ("'s") is kept as it is; then each is
lowercased. No NLTK data is needed: the tokenizer is regular expressions only. TextBlob and
`word_tokenize` would first split sentences with Punkt, whose model is a download; per line,
sentence splitting only separates sentence-final periods, which stripping removes anyway
(`bench/tag.py --punkt` checks that with Punkt's untrained parameters).

The fast path gives the same tokens without running those ~25 substitutions per line:

* The tokenizer only ever inserts spaces, and every rule looks at most one space beyond a
  whitespace-separated chunk of the line. So a line's tokens are the concatenation of its
  chunks' tokens, where a chunk's tokens depend only on the chunk and on whether it opens
  or ends its line (the rules that see the line's ends are `^"`, `([:,])$` and the final
  period). One exception: the final-period rule also splits a period followed only by
  closing quotes and spaces up to the line's end ("dead. ”"); the stripped word is the same
  either way, so the counts are too. Chunks repeat (a corpus of 600k lines has ~350k distinct
  ones), so each distinct chunk is tokenized once and cached (`chunk_tokens`).
* A chunk that is punctuation around one word (letters, digits, non-ASCII other than the
  quotes and dashes the tokenizer splits, and single inner hyphens; no apostrophe) gives that
  word lowercased: the rules split only around those characters, and stripping removes
  whatever stays attached. The contractions (`cannot` -> `can not`, `gonna` -> `gon na`, ...)
  are the exception and take the exact path.
* Any other chunk is tokenized exactly, by running the rules (the same patterns, with `re`)
  on a stand-in line `x <chunk> x` that puts it mid-line, at the start or at the end, and
  dropping the stand-in `x`s.

Lines are marked with private-use characters (`BOL`, `EOL`) glued to their first and last
chunk, so the marks travel with the chunk through Arrow's whitespace split. Text with
whitespace other than spaces and newlines (tabs, NBSP, `\\r`, ...) or with those marks in it
takes `tokenize`, the exact line-by-line path.
"""

import re
import string
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

# Line marks: private-use code points, so never letters, punctuation or whitespace.
BOL = "\ue000"
EOL = "\ue001"

# What TextBlob's `strip_punc` strips from a token's ends: ASCII punctuation only.
PUNCTUATION = string.punctuation

# Non-ASCII characters that NLTKWordTokenizer splits off: guillemets, curly quotes and
# apostrophes, low quotes, and figure/en/em dashes and the horizontal bar.
SPLIT_QUOTES_DASHES = "«“‘„»”’\u2012\u2013\u2014\u2015"

# --- NLTK's NLTKWordTokenizer (nltk 3.10), its patterns verbatim, run with `re` -------------
# (`tests/tagging/test_tagging.py` checks these against the installed NLTK.)
_STARTING_QUOTES = [
    (re.compile("([«“‘„]|[`]+)", re.U), r" \1 "),
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", re.U), r"\1 "),
]
_PUNCTUATION = [
    (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*+)\s*$", re.U), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}", re.U), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]", re.U), r" \g<0> "),
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]", re.U), r" \g<0> "),
]
_PARENS_BRACKETS = (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> ")
_DOUBLE_DASHES = (re.compile(r"--"), r" -- ")
_ENDING_QUOTES = [
    (re.compile("([»”’])", re.U), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_CONTRACTIONS2 = [
    re.compile(p)
    for p in (
        r"(?i)\b(can)(?#X)(not)\b",
        r"(?i)\b(d)(?#X)('ye)\b",
        r"(?i)\b(gim)(?#X)(me)\b",
        r"(?i)\b(gon)(?#X)(na)\b",
        r"(?i)\b(got)(?#X)(ta)\b",
        r"(?i)\b(lem)(?#X)(me)\b",
        r"(?i)\b(more)(?#X)('n)\b",
        r"(?i)\b(wan)(?#X)(na)(?=\s)",
    )
]
_CONTRACTIONS3 = [re.compile(r"(?i) ('t)(?#X)(is)\b"), re.compile(r"(?i) ('t)(?#X)(was)\b")]

# Characters without which a rule cannot match: skipping a rule that cannot match changes
# nothing, and most lines need only a few of the ~25 substitutions.
_HINTS = {
    "starting": frozenset("«“‘„`\"'"),
    "colon": frozenset(":,"),
    "period": frozenset("."),
    "semicolon": frozenset(";@#$%&"),
    "dash": frozenset("\u2012\u2013\u2014\u2015"),
    "question": frozenset("?!"),
    "brackets": frozenset("[](){}<>"),
    "ending": frozenset("»”’'\""),
}
_CONTRACTION_HINT = re.compile(r"(?i)cannot|d'ye|gimme|gonna|gotta|lemme|more'n|wanna")


def nltk_pieces(line: str) -> list[str]:
    """`NLTKWordTokenizer().tokenize(line)`, step for step."""
    text = line
    chars = frozenset(text)
    if not _HINTS["starting"].isdisjoint(chars):
        for regexp, substitution in _STARTING_QUOTES:
            text = regexp.sub(substitution, text)
    final, comma, colon_end, dots, semicolon, dash, period, question, quote, star = _PUNCTUATION
    if "." in chars:
        text = final[0].sub(final[1], text)
    if not _HINTS["colon"].isdisjoint(chars):
        text = comma[0].sub(comma[1], text)
        text = colon_end[0].sub(colon_end[1], text)
    if "." in chars:
        text = dots[0].sub(dots[1], text)
    if not _HINTS["semicolon"].isdisjoint(chars):
        text = semicolon[0].sub(semicolon[1], text)
    if not _HINTS["dash"].isdisjoint(chars):
        text = dash[0].sub(dash[1], text)
    if "." in chars:
        text = period[0].sub(period[1], text)
    if not _HINTS["question"].isdisjoint(chars):
        text = question[0].sub(question[1], text)
    if "'" in chars:
        text = quote[0].sub(quote[1], text)
    if "*" in chars:
        text = star[0].sub(star[1], text)
    if not _HINTS["brackets"].isdisjoint(chars):
        text = _PARENS_BRACKETS[0].sub(_PARENS_BRACKETS[1], text)
    if "-" in chars:
        text = _DOUBLE_DASHES[0].sub(_DOUBLE_DASHES[1], text)
    text = " " + text + " "
    if not _HINTS["ending"].isdisjoint(chars):
        for regexp, substitution in _ENDING_QUOTES:
            text = regexp.sub(substitution, text)
    # (Without quotes the ending rules change nothing that `split` below would not: their
    # `\s+` -> " " only serves the two quote rules after it.)
    if _CONTRACTION_HINT.search(text):
        for regexp in _CONTRACTIONS2:
            text = regexp.sub(r" \1 \2 ", text)
    if "'t" in text or "'T" in text:
        for regexp in _CONTRACTIONS3:
            text = regexp.sub(r" \1 \2 ", text)
    return text.split()


def textblob_words(pieces: list[str]) -> list[str]:
    """TextBlob's `WordTokenizer.tokenize(include_punc=False)` filter, then lowercased."""
    words = []
    for piece in pieces:
        stripped = piece.strip(PUNCTUATION)
        if stripped:
            words.append((piece if piece.startswith("'") else stripped).lower())
    return words


def line_tokens(line: str) -> list[str]:
    """The tokens of one line (no line breaks in it)."""
    return textblob_words(nltk_pieces(line))


def tokenize(text: str) -> list[str]:
    """The lowercased word tokens of a poem, line by line: the exact (slower) path."""
    return [token for line in text.splitlines() for token in line_tokens(line)]


# --- the fast path ----------------------------------------------------------------------------

_PUNCT_CLASS = re.escape(PUNCTUATION)
_NO_QUOTE_PUNCT = re.escape(PUNCTUATION.replace("'", ""))
# Punctuation (no apostrophe) around one word: runs without ASCII punctuation joined by single
# hyphens. The word is group 1 (absent for punctuation alone).
_WORD_CHAR = rf"[^{_PUNCT_CLASS}{SPLIT_QUOTES_DASHES}\s]"
_PLAIN_CHUNK = re.compile(
    rf"[{_NO_QUOTE_PUNCT}]*((?:{_WORD_CHAR}+)(?:-{_WORD_CHAR}+)*)?[{_NO_QUOTE_PUNCT}]*"
)
# Every word that a contraction rule could split (searched with a space after the word, so
# that `wanna`'s lookahead sees one; it may find more than in context, never fewer).
_ANY_CONTRACTION = re.compile(
    r"(?i)\b(?:cannot\b|d'ye\b|gimme\b|gonna\b|gotta\b|lemme\b|more'n\b|wanna(?=\s))"
)


# A bare ASCII word (no \b inside it) is split only when it is one of these as a whole.
_CONTRACTION_WORDS = frozenset(["cannot", "gimme", "gonna", "gotta", "lemme", "wanna"])


def chunk_tokens(chunk: str) -> tuple[str, ...]:
    """The tokens of one whitespace-free chunk of a line, `BOL`/`EOL`-marked when it opens or
    ends its line (see the module docstring)."""
    first = chunk.startswith(BOL)
    last = chunk.endswith(EOL)
    core = chunk[int(first) : len(chunk) - int(last)]
    if not core:
        return ()
    if core.isascii() and core.isalpha():  # the common case: a bare word
        word = core.lower()
        if word not in _CONTRACTION_WORDS:
            return (word,)
    else:
        plain = _PLAIN_CHUNK.fullmatch(core)
        if plain is not None:
            word = plain.group(1)
            if word is None:
                return ()
            if _ANY_CONTRACTION.search(word + " ") is None:
                return (word.lower(),)
    # The stand-in `x`s put the chunk mid-line; each comes back as a piece of its own, since
    # the tokenizer only inserts spaces and never looks past the space next to a chunk.
    pieces = nltk_pieces(("" if first else "x ") + core + ("" if last else " x"))
    return tuple(textblob_words(pieces[(0 if first else 1) : len(pieces) - (0 if last else 1)]))


# The plain rule of `chunk_tokens` for ASCII chunks, in RE2 for Arrow (ASCII punctuation as
# hex ranges; without whitespace or marks, the rest of ASCII is word characters). A chunk
# containing a contraction word anywhere takes the exact path (more than needed, never less).
_ASCII_PUNCT = r"\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e"
_ASCII_PUNCT_NO_QUOTE = r"\x21-\x26\x28-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e"
_PLAIN_CHUNK_RE2 = (
    rf"^[{_ASCII_PUNCT_NO_QUOTE}]*(?:[^{_ASCII_PUNCT}]+(?:-[^{_ASCII_PUNCT}]+)*)?"
    rf"[{_ASCII_PUNCT_NO_QUOTE}]*$"
)
_CONTRACTION_RE2 = r"(?i)cannot|gimme|gonna|gotta|lemme|wanna"


def plain_chunk_words(chunks: pa.Array) -> tuple[pa.Array, pa.Array]:
    """For distinct marked chunks: a boolean mask of those that `chunk_tokens` would answer
    by its plain rule, ASCII only, and their word (lowercased; "" for punctuation alone).
    The others go through `chunk_tokens`."""
    core = pc.utf8_trim(chunks, characters=BOL + EOL)
    plain = pc.and_(
        pc.and_(pc.string_is_ascii(core), pc.match_substring_regex(core, _PLAIN_CHUNK_RE2)),
        pc.invert(pc.match_substring_regex(core, _CONTRACTION_RE2)),
    )
    words = pc.ascii_lower(pc.utf8_trim(core, characters=PUNCTUATION.replace("'", "")))
    return plain, words


def chunked_tokens(text: str) -> list[str]:
    """A poem's tokens chunk by chunk (`chunk_tokens`), as the fast path makes them; equal to
    `tokenize(text)` for text without odd whitespace (see `needs_exact_path`)."""
    tokens: list[str] = []
    for line in text.split("\n"):
        for chunk in (BOL + line.rstrip(" ") + EOL).split():
            tokens.extend(chunk_tokens(chunk))
    return tokens


# Whitespace that `str.split` knows and the tokenizer's literal-space rules do not (tabs, NBSP,
# line separators other than \n), and the marks themselves: such text takes `tokenize`.
_ODD_CHARACTERS = (
    "".join(f"\\x{{{c:x}}}" for c in range(0x3001) if chr(c).isspace() and chr(c) not in " \n")
    + "\\x{e000}\\x{e001}"
)
_ODD_TEXT = f"[{_ODD_CHARACTERS}]"


def needs_exact_path(texts: pa.Array) -> pa.Array:
    """Boolean per text: True where the chunk cache cannot be used (see `_ODD_TEXT`)."""
    return pc.match_substring_regex(texts, _ODD_TEXT)


def marked_chunks(texts: pa.Array) -> pa.ListArray:
    """Per text, its chunks with `BOL`/`EOL` glued to each line's first and last chunk
    (trailing spaces dropped first, so that `EOL` sticks to the last chunk)."""
    if pc.any(pc.match_substring(texts, " \n")).as_py():
        texts = pc.replace_substring_regex(texts, " +\n", "\n")
    texts = pc.utf8_rtrim(texts, characters=" ")
    texts = pc.replace_substring(texts, "\n", f"{EOL}\n{BOL}")
    texts = pc.binary_join_element_wise(BOL, texts, EOL, "")
    return pc.ascii_split_whitespace(texts)


@lru_cache(maxsize=1)
def _reference_tokenizer():
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def reference_tokens(text: str) -> list[str]:
    """The definition, through NLTK and TextBlob themselves (slow: for tests and the bench)."""
    from textblob.utils import strip_punc

    tokenizer = _reference_tokenizer()
    return [
        (word if word.startswith("'") else strip_punc(word, all=False)).lower()
        for line in text.splitlines()
        for word in tokenizer.tokenize(line)
        if strip_punc(word, all=False)
    ]
