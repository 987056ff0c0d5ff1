"""Re-indexing on demand: pick a retriever, re-embed what changed, publish, in sync or async mode.

REALM refreshes its MIPS index while it trains: a background job re-embeds the corpus with the
latest exported retriever and swaps the index, and the trainer keeps going with the old index
until the new one is ready (REALM_NOTES §2.6). `IndexRefresher` is that machinery for any caller:

    refresher = IndexRefresher(build_cfg, mode="async")
    ...
    if step % refresh_every == 0:
        refresher.refresh(export_dir)        # sync: returns the new version; async: returns at once
    version = refresher.poll()               # async: the new version once it is published, else None

Each refresh is a `build_stage` run (sharded, resumable, incremental: unchanged blocks under an
unchanged encoder are copied, not re-embedded) followed by the atomic CURRENT swap, so a reader
of the index root sees the old index or the new one, never a mix. The retriever directory handed
to `refresh` must not change while it is being indexed: export each refresh to its own directory.
In async mode at most one refresh runs; a `refresh` while one is running replaces the pending
request (only the newest retriever is worth indexing next).

Device and precision (`device=`, `precision=`, else the config's) are resolved once, when the
refresher is made, so every index version of a run is embedded on the same device in the same
precision, whichever thread runs the refresh. On a GPU trainer, `device="cuda"` puts the re-embedding next to the training step; a CPU
refresher keeps the GPU to the trainer at the cost of slower refreshes.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from realm_core.config import BuildIndexConfig
from realm_core.devices import resolve_stage
from realm_core.errors import RealmError
from realm_core.retrieval import build_stage

NEWEST = "newest:"


def _is_retriever(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return str(config.get("format", "")).startswith("realm-retriever") and (path / "model.safetensors").is_file()


def newest_retriever(directory: str | Path) -> Path:
    """The most recently written retriever directory at or under `directory` (two levels deep)."""
    root = Path(directory)
    candidates = [p for p in (root, *root.glob("*"), *root.glob("*/*")) if p.is_dir() and not p.name.startswith(".")
                  and _is_retriever(p)]
    if not candidates:
        raise RealmError(f"{root}: no retriever directory (config.json + model.safetensors) found there")
    return max(candidates, key=lambda p: ((p / "model.safetensors").stat().st_mtime_ns, str(p)))


def resolve_retriever(spec: str) -> Path:
    """A retriever directory from a path or a "newest:<dir>" spec."""
    path = newest_retriever(spec[len(NEWEST):]) if spec.startswith(NEWEST) else Path(spec)
    if not _is_retriever(path):
        raise RealmError(f"{path}: not a retriever directory (needs a realm-retriever config.json and model.safetensors)")
    return path


class IndexRefresher:
    """Re-index `cfg.blocks` into `cfg.output_dir` with retriever after retriever (sync or async),
    on `device` in `precision` ("auto", or as in `BuildIndexConfig`; None: the config's)."""

    def __init__(self, cfg: BuildIndexConfig, mode: str = "sync", info: Callable[[str], None] = lambda m: None, *,
                 device: str | None = None, precision: str | None = None) -> None:
        if mode not in ("sync", "async"):
            raise RealmError(f"index refresh mode must be 'sync' or 'async', got {mode!r}")
        chosen = {k: v for k, v in (("device", device), ("precision", precision)) if v is not None}
        cfg = resolve_stage(cfg.model_copy(update=chosen), "IndexRefresher")
        self.cfg, self.mode, self.info = cfg, mode, info
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-refresh") if mode == "async" else None
        # Re-entrant: a future that is already done runs its done-callback (which takes the lock)
        # inside add_done_callback, i.e. while refresh() still holds it.
        self._lock = threading.RLock()
        # Signalled by _on_done: wait() sleeps on it until no refresh is running or queued.
        self._idle = threading.Condition(self._lock)
        # The refresh whose _on_done has not run yet (None: idle). Cleared by _on_done, not by the
        # future finishing, so a version or an error is always recorded before anyone sees idle.
        self._running: Future | None = None
        self._pending: Path | None = None
        self._published: list[str] = []
        # Failures not yet raised to the caller, oldest first. Recorded here rather than read off
        # `_running`: a queued refresh replaces `_running` as soon as the failed one ends, and the
        # failure would be lost with it.
        self._errors: list[BaseException] = []
        self.last_metrics: dict | None = None

    def _run(self, retriever: Path) -> str:
        metrics = build_stage.run_build_index(self.cfg.model_copy(update={"retriever": str(retriever)}), self.info)
        self.last_metrics = metrics
        return metrics["version"]

    def refresh(self, retriever: str | Path) -> str | None:
        """Index with `retriever`. sync: returns the published version. async: starts (or queues,
        replacing any queued request) a background refresh and returns None."""
        path = resolve_retriever(str(retriever))
        if self._pool is None:
            return self._run(path)
        with self._lock:
            if self._running is not None:  # running, or finished with its _on_done still to come
                self._pending = path
                return None
            self._start(path)
        return None

    def _start(self, path: Path) -> None:
        self._running = self._pool.submit(self._run, path)
        self._running.add_done_callback(self._on_done)

    def _on_done(self, future: Future) -> None:
        with self._lock:
            error = future.exception()
            if error is not None:
                self._errors.append(error)
            else:
                self._published.append(future.result())
            # Cleared before _start, which sets it again (and, if the new future is already done,
            # runs a nested _on_done that clears it: the assignment in _start comes first).
            self._running = None
            if self._pending is not None:
                path, self._pending = self._pending, None
                try:
                    self._start(path)
                except BaseException as exc:  # e.g. the pool was shut down: report, don't drop
                    self._errors.append(exc)
            self._idle.notify_all()

    def poll(self) -> str | None:
        """async: the newest version published since the last poll (None if none). A failed
        background refresh raises its error here, once, oldest failure first (before versions)."""
        with self._lock:
            if self._errors:
                raise self._errors.pop(0)
            if not self._published:
                return None
            newest, self._published = self._published[-1], []
            return newest

    def wait(self) -> str | None:
        """async: block until no refresh is running or queued; returns the newest published version,
        or raises the oldest failure not yet raised."""
        with self._idle:
            # _on_done starts the queued request in the same locked step that ends the last one, so
            # `_running is None` already implies nothing queued; both are checked for clarity.
            self._idle.wait_for(lambda: self._running is None and self._pending is None)
        return self.poll()

    def close(self) -> None:
        """Wait for background work and stop the worker thread; raises a failure not yet raised."""
        if self._pool is not None:
            try:
                self.wait()
            finally:  # stop the worker even when a failure is raised
                self._pool.shutdown(wait=True)
