"""The server's models: which version each emotion uses now, and the loaded ones.

`ModelCache` asks the registry (through a short TTL) which version is current, so
`emoverse models --promote/--rollback` takes effect without a restart; loaded models sit in a
small LRU cache keyed by (emotion, version, folder), each with its `Batcher` (apps/batcher.py).
A dialled or blended model is merged once (cached on disk under the data dir) and then loaded
into the same cache, so the cache bounds the memory of those too.
"""

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from apps.batcher import Batcher, BatchSettings, Worker
from emoverse.errors import EmoverseError
from models.generation.blend import Recipe, materialize, resolve_recipe
from models.generation.choice import Choice, choose_model
from models.generation.generate import PoemGenerator
from models.registry.model_registry import ModelRecord, ModelRegistry

log = logging.getLogger("emoverse.serve")

DEFAULT_CACHE_SIZE = 4  # loaded models kept; nine GPT-2-124M children would take ~4.5 GB
MAX_DIALS_REMEMBERED = 256  # recent recipes the event loop answers without the thread pool
DEFAULT_REGISTRY_TTL_S = 2.0  # how stale a "which version is current" answer may be


class ModelCache:
    """Which version each emotion uses now (asked of the registry at most every `ttl_s`),
    and the last `size` loaded models, each with its batcher. Thread-safe: its calls run in
    FastAPI's thread pool."""

    def __init__(
        self,
        registry: ModelRegistry,
        size: int,
        ttl_s: float,
        batching: BatchSettings | None = None,
        blends_dir: Path | None = None,
    ):
        self.registry = registry
        self.blends_dir = blends_dir  # where dialled and blended models are merged to
        self.size = size
        self.ttl_s = ttl_s
        self.batching = batching or BatchSettings()
        self.loads = 0  # models loaded so far (tests and the bench read it)
        self._current: dict[str, tuple[float, ModelRecord, str | None]] = {}
        self._choices: dict[tuple[str, str], tuple[float, Choice]] = {}  # conditional, best
        self._versions: dict[tuple[str, int], ModelRecord] = {}  # for a recipe's base
        # weights -> (when resolved, recipe, batcher): a repeated recipe skips the thread pool
        self._dials: dict[tuple[tuple[str, float], ...], tuple[float, Recipe, Batcher]] = {}
        self._batchers: OrderedDict[tuple[str, int, str], Batcher] = OrderedDict()
        self._worker = Worker()  # one thread steps every loaded model's batches
        self._registry_lock = threading.Lock()  # one sqlite session, one query at a time
        self._load_lock = threading.Lock()  # concurrent first requests load a model once

    def current(self, emotion: str) -> tuple[ModelRecord, str | None]:
        """The emotion's record and the fallback warning (None for a champion)."""
        now = time.monotonic()
        with self._registry_lock:
            cached = self._current.get(emotion)
            if cached is not None and now - cached[0] < self.ttl_s:
                return cached[1], cached[2]
            record, warning = self.registry.current(emotion)
            if warning and (cached is None or cached[1] != record):
                log.warning(warning)
            self._current[emotion] = (now, record, warning)
            return record, warning

    def choose(self, emotion: str, model: str) -> Choice:
        """`models.generation.choice.choose_model`, asked of the registry at most every `ttl_s`."""
        now = time.monotonic()
        with self._registry_lock:
            cached = self._choices.get((emotion, model))
            if cached is not None and now - cached[0] < self.ttl_s:
                return cached[1]
            choice = choose_model(self.registry, emotion, model)
            if choice.warning and (cached is None or cached[1] != choice):
                log.warning(choice.warning)
            self._choices[(emotion, model)] = (now, choice)
            return choice

    def cached(self, emotion: str) -> tuple[ModelRecord, str | None, Batcher] | None:
        """The emotion's current record, warning and loaded batcher when all three are at
        hand without blocking (no registry query, no load, no lock waited for); else None.
        The event loop tries this before it sends the blocking path to a thread."""
        now = time.monotonic()
        cached = self._current.get(emotion)
        if cached is None or now - cached[0] >= self.ttl_s:
            return None
        record, warning = cached[1], cached[2]
        batcher = self._batchers.get((record.emotion, record.version, record.path))
        if batcher is None:
            return None
        if self._load_lock.acquire(blocking=False):  # keep the LRU order when we can
            try:
                if batcher is self._batchers.get((record.emotion, record.version, record.path)):
                    self._batchers.move_to_end((record.emotion, record.version, record.path))
            finally:
                self._load_lock.release()
        return record, warning, batcher

    def get(self, emotion: str, *, version: int) -> ModelRecord:
        """One version's record (a recipe's base); its folder never changes, so it is asked
        of the registry once."""
        with self._registry_lock:
            if (emotion, version) not in self._versions:
                record = self.registry.get(emotion, version=version)
                self._versions[(emotion, version)] = record
            return self._versions[(emotion, version)]

    def dialled(self, weights: dict[str, float]) -> tuple[Recipe, Batcher]:
        """The recipe of `weights` from the current records, and the batcher of its model:
        the base's or the child's own where the recipe is one of them, else the merged
        folder (merged on the first request of a new recipe), loaded into this same cache."""
        if self.blends_dir is None:
            raise EmoverseError("this server has no folder to merge dialled models into")
        now = time.monotonic()
        recipe = resolve_recipe(self, weights)
        if (own := recipe.shortcut()) is not None:
            record = recipe.base if own == recipe.base.path else recipe.active[0].record
            batcher = self.batcher(record)
        else:
            folder = materialize(recipe, self.blends_dir)
            batcher = self._loaded(("blend", 0, str(folder)), str(folder))
        with self._load_lock:
            if batcher in self._batchers.values():  # not evicted meanwhile
                self._dials[tuple(weights.items())] = (now, recipe, batcher)
                while len(self._dials) > MAX_DIALS_REMEMBERED:
                    del self._dials[next(iter(self._dials))]
        return recipe, batcher

    def cached_dial(self, weights: dict[str, float]) -> tuple[Recipe, Batcher] | None:
        """`dialled(weights)` when resolved less than `ttl_s` ago and its model is still
        loaded; else None (the event loop's fast path, as `cached` is for one emotion)."""
        found = self._dials.get(tuple(weights.items()))
        if found is None or time.monotonic() - found[0] >= self.ttl_s:
            return None
        _, recipe, batcher = found
        if batcher not in self._batchers.values():
            return None
        if self._load_lock.acquire(blocking=False):  # keep the LRU order when we can
            try:
                for key, loaded in self._batchers.items():
                    if loaded is batcher:
                        self._batchers.move_to_end(key)
                        break
            finally:
                self._load_lock.release()
        return recipe, batcher

    def batcher(self, record: ModelRecord) -> Batcher:
        """The record's loaded model and its batcher (loaded on first use)."""
        key = (record.emotion, record.version, record.path)
        return self._loaded(key, record.path, record.weights)

    def _loaded(
        self, key: tuple[str, int, str], folder: str, weights: dict[str, Any] | None = None
    ) -> Batcher:
        """`weights`: the registry's digests of a registered folder, checked on load."""
        with self._load_lock:
            if key in self._batchers:
                self._batchers.move_to_end(key)
                return self._batchers[key]
            batcher = Batcher(PoemGenerator(folder, weights), self.batching, self._worker)
            self.loads += 1
            self._batchers[key] = batcher
            while len(self._batchers) > self.size:
                evicted = self._batchers.popitem(last=False)[1]
                evicted.close()  # ends once its work is done
                # No reference may keep an evicted model in memory.
                for weights in [w for w, (_, _, b) in self._dials.items() if b is evicted]:
                    del self._dials[weights]
            return batcher

    def generator(self, record: ModelRecord) -> PoemGenerator:
        return self.batcher(record).generator

    def close(self) -> None:
        with self._load_lock:
            for batcher in self._batchers.values():
                batcher.close()
            self._batchers.clear()
