"""Dynamic batching for `emoverse serve`: one `Batcher` per loaded model.

Requests wait in a bounded queue; a worker thread (torch work off the event loop) admits
those that arrived within `window_ms` of the oldest, up to `max_batch` poems in flight, and
steps every running cohort (`models.generation.sampling.Cohort`, one per prompt length) one token
at a
time. Requests that arrive while a batch runs wait for it to end (a cohort cannot take rows
in mid-poem without padding, which would change their poems), unless they are enough to
fill half the batch: then they start a cohort of their own beside it. Finished, cancelled
(client gone) and timed-out rows leave the batch at once. Events go back
to each request's asyncio queue on its event loop: token deltas (streaming requests only),
then `done` with the poems, or `error` with an HTTP status and message.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch-free at import: the CLI reads BatchSettings' defaults
    from models.generation.generate import GenerationRequest, PoemGenerator
    from models.generation.sampling import Cohort, Row

log = logging.getLogger("emoverse.serve")


@dataclass(frozen=True)
class BatchSettings:
    """Per model; `emoverse serve` options of the same names set them."""

    window_ms: float = 5.0  # how long the first waiting request waits for others to join it
    max_batch: int = 32  # poems (rows) in flight per model
    max_queue: int = 64  # requests waiting per model; one more is a 503
    timeout_s: float = 60.0  # a request's whole life, queue included; then a 504


RETRY_AFTER_S = 1  # a batch of the small models finishes within about a second


class QueueFull(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"the server is busy; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Job:
    """One request: its rows, where its events go, and whether it still wants them."""

    def __init__(
        self,
        request: GenerationRequest,
        rows: list[Row],
        loop: asyncio.AbstractEventLoop,
        *,
        stream: bool,
        timeout_s: float,
    ):
        self.request = request
        self.rows = rows
        self.loop = loop
        self.stream = stream
        self.events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.queued = time.monotonic()
        self.deadline = self.queued + timeout_s
        self.sent = [""] * len(rows)  # streamed text so far, per poem
        self.over = False

    def cancel(self) -> None:
        """Stop writing (from any thread): the rows leave the batch before the next step."""
        for row in self.rows:
            row.cancelled = True

    @property
    def cancelled(self) -> bool:
        return any(row.cancelled for row in self.rows)

    def emit(self, *event: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server is stopping
            self.cancel()


class Worker:
    """The thread that does the torch work of batchers, in turn: admit, then one step of each
    batcher that has work. One thread for every model of a server (rather than one each)
    keeps them from fighting over the GIL between their many short torch calls, which on a
    small CPU costs more than stepping them one after the other."""

    def __init__(self) -> None:
        self.cond = threading.Condition()  # guards every batcher's queue too
        self.batchers: list[Batcher] = []
        self._thread = threading.Thread(target=self._run, name="emoverse-worker", daemon=True)
        self._thread.start()

    def add(self, batcher: Batcher) -> None:
        with self.cond:
            self.batchers.append(batcher)

    def _run(self) -> None:
        while True:
            with self.cond:
                while True:
                    for batcher in [b for b in self.batchers if b._closed and not b._cohorts]:
                        self.batchers.remove(batcher)
                        batcher._refuse_pending()
                    ready = [b for b in self.batchers if b._cohorts or b._ready()]
                    if ready:
                        break
                    waits = [b._window_left() for b in self.batchers if b._pending]
                    self.cond.wait(max(0.0, min(waits)) if waits else None)
            for batcher in ready:
                with batcher._gate:
                    try:
                        batcher._admit()
                        batcher._step()
                    except Exception as exc:  # one bad batch must not stop the worker
                        log.exception("generation failed")
                        batcher._fail_all(f"generation failed: {exc}")


class Batcher:
    """One model's queue and running cohorts; a `Worker` does its torch work."""

    def __init__(
        self, generator: PoemGenerator, settings: BatchSettings, worker: Worker | None = None
    ):
        self.generator = generator
        self.settings = settings
        self.batch_sizes: Counter[int] = Counter()  # rows per cohort started (tests, bench)
        self.cancelled = 0  # requests stopped before their end (client gone, timeout)
        self.tokens = 0  # tokens written
        self._pending: deque[Job] = deque()
        self._cohorts: list[Cohort] = []
        self._worker = worker or Worker()
        self._cond = self._worker.cond
        self._gate = threading.Lock()  # held by the worker while it admits and steps
        self._closed = False
        self._worker.add(self)

    # --- the event loop's side -------------------------------------------------------------

    def submit(self, request: GenerationRequest, rows: list[Row], *, stream: bool) -> Job:
        """Queue a request (rows from `generator.rows`); raises QueueFull when the queue is."""
        job = Job(
            request,
            rows,
            asyncio.get_running_loop(),
            stream=stream,
            timeout_s=self.settings.timeout_s,
        )
        for i, row in enumerate(rows):
            row.tag = (job, i)
        with self._cond:
            if len(self._pending) >= self.settings.max_queue:
                raise QueueFull(RETRY_AFTER_S)
            self._pending.append(job)
            self._cond.notify()
        return job

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return sum(len(c.rows) for c in self._cohorts)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the worker from admitting or stepping during the block (tests: fill the
        queue, or make requests arrive together)."""
        with self._gate:
            yield

    def close(self) -> None:
        """Stop once the admitted work is done; requests still queued get a 503."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    # --- the worker thread ---------------------------------------------------------------

    def _ready(self) -> bool:
        """Idle with requests waiting: their window has closed, or they fill the batch."""
        return bool(self._pending) and (
            self._window_left() <= 0 or self._room_wanted() >= self._room()
        )

    def _refuse_pending(self) -> None:
        for job in self._pending:
            job.emit("error", 503, "the model was unloaded; retry")
        self._pending.clear()

    def _window_left(self) -> float:
        if not self._pending:
            return 0.0
        return self._pending[0].queued + self.settings.window_ms / 1000 - time.monotonic()

    def _room(self) -> int:
        return self.settings.max_batch - self.running

    def _room_wanted(self) -> int:
        return sum(len(job.rows) for job in self._pending)

    def _admit(self) -> None:
        now = time.monotonic()
        taken: list[Job] = []
        with self._cond:
            for job in list(self._pending):  # drop the dead before they cost anything
                if job.cancelled or now > job.deadline:
                    self._pending.remove(job)
                    self._end(job, timed_out=not job.cancelled)
            room = self._room()
            if not self._pending or (
                # While a batch runs, newcomers wait for it to end and then go in together,
                # unless they fill at least half the batch: every cohort costs a forward pass
                # per step, so a few large ones beat many small ones.
                self._cohorts
                and not (
                    room >= max(1, self.settings.max_batch // 2) and self._room_wanted() >= room
                )
            ):
                return
            while self._pending and (
                len(self._pending[0].rows) <= room
                or not (self._cohorts or taken)  # more poems than --max-batch: alone
            ):
                job = self._pending.popleft()
                room -= len(job.rows)
                taken.append(job)
        by_length: dict[int, list[Row]] = {}
        for job in taken:
            for row in job.rows:
                by_length.setdefault(len(row.spec.prompt_ids), []).append(row)
        for rows in by_length.values():
            self._cohorts.append(self.generator.cohort(rows))
            self.batch_sizes[len(rows)] += 1

    def _step(self) -> None:
        now = time.monotonic()
        for cohort in self._cohorts:
            for row in cohort.rows:  # client gone, or out of time: out before the next step
                job: Job = row.tag[0]
                if not job.over and (row.cancelled or now > job.deadline):
                    self._end(job, timed_out=not row.cancelled)
            stepped = cohort.step()
            self.tokens += len(stepped)
            for row, _token in stepped:  # every poem's new text first...
                job, index = row.tag
                if job.stream and not job.over:
                    text = self.generator.text(row, strip=False)
                    if not text.endswith("\ufffd"):  # half a character: wait for the rest
                        delta = text[len(job.sent[index]) :]
                        if delta:
                            job.sent[index] = text
                            job.emit("token", index, delta)
            for row, _token in stepped:  # ...then the requests this step completed
                job = row.tag[0]
                if not job.over and all(r.finished for r in job.rows):
                    job.over = True
                    job.emit("done", [self.generator.text(r) for r in job.rows])
        self._cohorts = [c for c in self._cohorts if not c.done]

    def _end(self, job: Job, *, timed_out: bool) -> None:
        job.cancel()
        if job.over:
            return
        job.over = True
        self.cancelled += 1
        if timed_out:
            job.emit("error", 504, f"timed out after {self.settings.timeout_s:g} s")

    def _fail_all(self, message: str) -> None:
        for cohort in self._cohorts:
            for row in cohort.rows:
                job = row.tag[0]
                job.cancel()
                if not job.over:
                    job.over = True
                    job.emit("error", 500, message)
        self._cohorts = []
