"""Fetching books from a Gutenberg mirror, with retries and a raw cache.

A mirror is either an http(s) URL with the site's layout (the public site, or a loopback server
over a local copy) or a local folder with that same layout. A book is looked for at
`cache/epub/<id>/pg<id>.txt`, then at the uploaded `files/<id>/<id>-0.txt`, `<id>.txt` and
`<id>-8.txt`. Downloads are retried with backoff and cached under a folder keyed by id with
their sha256.
"""

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from emoverse import __version__, settings
from emoverse.atomic import atomic_path
from emoverse.corpus.reasons import FETCH_FAILED, HTML_PAGE, BookRejectedError
from emoverse.errors import BookNotFoundError, EmoverseError, MirrorNotFoundError

USER_AGENT = "emoverse/" + ".".join(__version__.split(".")[:2])  # "emoverse/0.1"
# Polite by default: the site asks robots not to hammer it.
DEFAULT_PARALLEL = 2
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
RDF_DEADLINE_S = 20.0  # the RDF record is a best-effort fallback for a title and author


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a download is tried: `attempts` in all, waiting
    base_delay * 2**k (at most max_delay) before retry k+1, stretched by up to `jitter` of
    itself at random so that parallel downloads do not retry in step."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        if min(self.base_delay, self.max_delay, self.jitter) < 0:
            raise ValueError("retry delays and jitter cannot be negative")

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `retry` (1 for the second attempt)."""
        base = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return base * (1.0 + self.jitter * rand())


DEFAULT_RETRY = RetryPolicy()


def book_path(gutenberg_id: int) -> str:
    """Path of a book's plain-text file relative to the mirror root (the site's own layout)."""
    return f"cache/epub/{int(gutenberg_id)}/pg{int(gutenberg_id)}.txt"


def book_paths(gutenberg_id: int) -> list[str]:
    """Where the site keeps a book's plain text, in the order to try: the generated UTF-8 file,
    then the uploaded UTF-8, ASCII and Latin-1 files that older books only have."""
    i = int(gutenberg_id)
    return [book_path(i), f"files/{i}/{i}-0.txt", f"files/{i}/{i}.txt", f"files/{i}/{i}-8.txt"]


def _rdf_path(gutenberg_id: int) -> str:
    return f"cache/epub/{int(gutenberg_id)}/pg{int(gutenberg_id)}.rdf"


def is_url(mirror: str) -> bool:
    return mirror.startswith(("http://", "https://"))


def _local_folder(mirror: str) -> Path:
    """A local mirror given as a path or a file:// URL."""
    if mirror.startswith("file:"):
        return Path(unquote(urlparse(mirror).path))
    return Path(mirror).expanduser()


def _as_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


def new_client(
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, max_parallel: int = DEFAULT_PARALLEL
) -> httpx.Client:
    # Redirects are followed because the public site redirects between hosts and schemes.
    return httpx.Client(
        timeout=_as_timeout(timeout),
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT},
        limits=httpx.Limits(max_connections=max_parallel, max_keepalive_connections=max_parallel),
    )


def check_mirror(mirror: str) -> None:
    """Fail early on a local mirror folder that does not exist; URLs are only checked on use
    (a network probe here would cost a round trip for every run)."""
    if is_url(mirror):
        return
    folder = _local_folder(mirror)
    if not folder.is_dir():
        raise MirrorNotFoundError(f"Gutenberg mirror folder {folder} does not exist")


def looks_like_html(body: bytes, content_type: str = "") -> bool:
    """An HTML page (a proxy's or a CDN's error page served with status 200), not a book."""
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    head = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


class Aborted(Exception):
    """Another download found the mirror unreachable: stop instead of retrying."""


class Abort:
    """Shared by the downloads of one run: set when one of them finds the mirror unreachable
    (or the run stops), so that the others do not wait out their retries."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.error: MirrorNotFoundError | None = None

    def set(self, error: MirrorNotFoundError | None = None) -> None:
        if error is not None and self.error is None:
            self.error = error
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return type(exc).__name__ + (f": {text}" if text else "")


def _http_get(
    client: httpx.Client,
    url: str,
    mirror: str,
    retry: RetryPolicy,
    abort: Abort | None = None,
    deadline_s: float | None = None,
) -> bytes | None:
    """The body at `url`, or None for a 404/410 (final). 5xx, 408/429, timeouts and dropped
    connections are retried, all attempts together within `deadline_s` (default the
    download deadline): a mirror that drips bytes is given up on, not waited out per attempt.
    Raises MirrorNotFoundError when no attempt could even connect, BookRejectedError for an
    HTML page or when every attempt failed."""
    failures: list[str] = []
    only_connect_errors = True
    max_bytes = settings.max_book_bytes()
    if deadline_s is None:
        deadline_s = settings.download_deadline_s()
    give_up_at = time.monotonic() + deadline_s
    for attempt in range(1, retry.attempts + 1):
        if attempt > 1:
            pause = retry.delay(attempt - 1)
            if time.monotonic() + pause >= give_up_at:
                failures.append(f"{failures.pop()}; no time left for another attempt")
                break
            time.sleep(pause)
        if abort is not None and abort.is_set():
            raise Aborted
        try:
            with client.stream("GET", url) as response:
                only_connect_errors = False
                status = response.status_code
                if status in (404, 410):
                    return None
                if status >= 500 or status in (408, 429):
                    failures.append(f"HTTP {status}")
                    continue
                if status != 200:
                    raise BookRejectedError(FETCH_FAILED, f"HTTP {status} at {url}")
                # A dropped connection mid-body raises here, while the body is read.
                body = _read_body(response, url, max_bytes, give_up_at)
        except httpx.RequestError as exc:
            only_connect_errors &= isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            failures.append(_describe(exc))
            continue
        except _TooSlow:  # the time for every attempt is spent: a slow mirror stays slow
            raise BookRejectedError(
                FETCH_FAILED,
                f"download not done within {deadline_s:g} s at {url} (all attempts together; "
                "EMOVERSE_DOWNLOAD_DEADLINE_S)",
            ) from None
        if looks_like_html(body, response.headers.get("content-type", "")):
            raise BookRejectedError(HTML_PAGE, f"{url} served an HTML page with status 200")
        return body
    if only_connect_errors:
        raise MirrorNotFoundError(f"Gutenberg mirror {mirror} cannot be reached: {failures[-1]}")
    tries = "attempt" if len(failures) == 1 else f"{len(failures)} attempts"
    raise BookRejectedError(FETCH_FAILED, f"{failures[-1]} at {url} after {tries}")


class _TooSlow(Exception):
    """A download still running at its deadline (a mirror dripping bytes)."""


def _read_body(response: httpx.Response, url: str, max_bytes: int, deadline: float) -> bytes:
    """The body, read in chunks: refused once over `max_bytes` (an endless body must not grow
    memory without bound), abandoned at `deadline` (time.monotonic())."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BookRejectedError(
            FETCH_FAILED, f"{url} announces {int(declared)} bytes, over the {max_bytes} cap"
        )
    body = bytearray()
    for chunk in response.iter_bytes():  # as it arrives: a chunk size would wait to fill it
        body += chunk
        if len(body) > max_bytes:
            raise BookRejectedError(
                FETCH_FAILED, f"{url} sent more than {max_bytes} bytes (the cap); not a book"
            )
        if time.monotonic() > deadline:
            raise _TooSlow
    return bytes(body)


# --- the raw cache ---------------------------------------------------------------------------


def _cache_files(cache_dir: Path, name: str) -> tuple[Path, Path]:
    """The cached file and its record: `<id>.txt` + `<id>.json`, `<id>.rdf` + `<id>.rdf.json`."""
    data = Path(cache_dir) / name
    meta = data.with_suffix(".json") if name.endswith(".txt") else data.with_name(name + ".json")
    return data, meta


def cached_file(cache_dir: Path, name: str) -> bytes | None:
    """A cached download if its record's size and sha256 still match the file; None when it is
    absent, truncated or corrupted (the caller fetches it again)."""
    data, meta = _cache_files(cache_dir, name)
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
        raw = data.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("size") != len(raw):
        return None
    if record.get("sha256") != hashlib.sha256(raw).hexdigest():
        return None
    return raw


def cache_store(cache_dir: Path, name: str, raw: bytes, url: str) -> None:
    """Write a complete download and its record, each through a temp file and a rename. The
    data goes first: a crash in between leaves a file without a record, which reads as absent."""
    data, meta = _cache_files(cache_dir, name)
    meta.unlink(missing_ok=True)  # an old record must not vouch for the new data
    with atomic_path(data) as tmp:
        tmp.write_bytes(raw)
    record = {
        "sha256": hashlib.sha256(raw).hexdigest(),
        "size": len(raw),
        "url": url,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


# --- one book --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedBook:
    gutenberg_id: int
    raw: bytes
    source: str  # the URL or file it came from
    from_cache: bool
    rdf: bytes | None = None  # only fetched when the header lacks a title or author


def _not_found(gutenberg_id: int, mirror: str) -> BookNotFoundError:
    return BookNotFoundError(f"Gutenberg book {gutenberg_id} not found at {mirror}")


def get_book(
    mirror: str,
    gutenberg_id: int,
    client: httpx.Client | None,
    retry: RetryPolicy,
    cache_dir: Path | None,
    abort: Abort | None = None,
) -> FetchedBook:
    if not is_url(mirror):
        # A local folder is its own cache: reading it again costs no more than a copy would.
        check_mirror(mirror)
        folder = _local_folder(mirror)
        for rel in book_paths(gutenberg_id):
            path = folder / rel
            if path.is_file():
                raw = path.read_bytes()
                if looks_like_html(raw):
                    raise BookRejectedError(HTML_PAGE, f"{path} is an HTML page", gutenberg_id)
                return FetchedBook(gutenberg_id, raw, str(path), False)
        raise _not_found(gutenberg_id, mirror)
    name = f"{int(gutenberg_id)}.txt"
    if cache_dir is not None and (raw := cached_file(cache_dir, name)) is not None:
        return FetchedBook(gutenberg_id, raw, str(Path(cache_dir) / name), True)
    assert client is not None
    for rel in book_paths(gutenberg_id):
        url = f"{mirror.rstrip('/')}/{rel}"
        try:
            raw = _http_get(client, url, mirror, retry, abort)
        except BookRejectedError as exc:
            raise BookRejectedError(exc.reason, exc.detail, gutenberg_id) from None
        if raw is not None:
            if cache_dir is not None:
                cache_store(cache_dir, name, raw, url)
            return FetchedBook(gutenberg_id, raw, url, False)
    raise _not_found(gutenberg_id, mirror)


def get_rdf(
    mirror: str, gutenberg_id: int, client: httpx.Client | None, cache_dir: Path | None
) -> bytes | None:
    """The book's RDF record, best effort (one attempt, any failure is None): only a fallback
    for the title and author."""
    if not is_url(mirror):
        try:
            return (_local_folder(mirror) / _rdf_path(gutenberg_id)).read_bytes()
        except OSError:
            return None
    name = f"{int(gutenberg_id)}.rdf"
    if cache_dir is not None and (raw := cached_file(cache_dir, name)) is not None:
        return raw
    assert client is not None
    url = f"{mirror.rstrip('/')}/{_rdf_path(gutenberg_id)}"
    try:
        # A fallback: it may not hold the book up longer than a fraction of its own deadline.
        deadline_s = min(RDF_DEADLINE_S, settings.download_deadline_s())
        raw = _http_get(client, url, mirror, RetryPolicy(attempts=1), deadline_s=deadline_s)
    except EmoverseError:
        return None
    if raw is not None and cache_dir is not None:
        cache_store(cache_dir, name, raw, url)
    return raw


def fetch_book(
    mirror: str,
    gutenberg_id: int,
    *,
    client: httpx.Client | None = None,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    retry: RetryPolicy = DEFAULT_RETRY,
    cache_dir: Path | None = None,
) -> bytes:
    """The raw bytes of one book from an http(s) mirror or a local folder mirror, through the
    cache when `cache_dir` is given.

    Raises MirrorNotFoundError when the mirror itself is missing or unreachable (every attempt
    refused or unresolvable), BookNotFoundError when no URL pattern has the book (404), and
    BookRejectedError when retries ran out or the server sent an HTML page.
    """
    check_mirror(mirror)
    own_client = client is None and is_url(mirror)
    http = new_client(timeout) if own_client else client
    try:
        return get_book(mirror, gutenberg_id, http, retry, cache_dir).raw
    finally:
        if own_client and http is not None:
            http.close()
