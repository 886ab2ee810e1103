"""Why a book or a passage is left out of the corpus: the reasons in the rejects table."""

from emoverse.errors import EmoverseError

# Reasons in the rejects table. Book level: the whole book is left out.
NOT_FOUND = "not found"
FETCH_FAILED = "fetch failed"
HTML_PAGE = "html error page"
ENCODING = "encoding"
EMPTY = "empty after stripping"
NOT_POETRY = "not poetry"
BOOK_REJECTS = (NOT_FOUND, FETCH_FAILED, HTML_PAGE, ENCODING, EMPTY, NOT_POETRY)
# Passage level: what the splitter or dedup left out of a book that was kept.
MATTER_DROPPED = "front/back matter dropped"
MOSTLY_PROSE = "mostly prose"
DUPLICATES = "duplicates dropped"
# Not a drop: a kept UTF-8 book had invalid bytes, replaced with U+FFFD (counted in `detail`).
BYTES_REPLACED = "invalid bytes replaced"
REJECT_REASONS = (*BOOK_REJECTS, MATTER_DROPPED, MOSTLY_PROSE, DUPLICATES, BYTES_REPLACED)
# A book whose verse is under this share of its lines is rejected as not poetry.
MIN_VERSE_SHARE = 0.1


class BookRejectedError(EmoverseError):
    """A book that was fetched (or tried) but cannot be used; `reason` is one of BOOK_REJECTS."""

    def __init__(self, reason: str, detail: str, gutenberg_id: int | None = None):
        where = f"Gutenberg book {gutenberg_id}: " if gutenberg_id is not None else ""
        super().__init__(f"{where}{reason} ({detail})")
        self.reason = reason
        self.detail = detail
        self.gutenberg_id = gutenberg_id
