"""The MIPS index REALM pre-training retrieves from, and its refresh while the model trains.

REALM selects candidates with a *stale* index: document embeddings, and the query tower that
made them, from a snapshot of the retriever taken some steps ago; every few hundred steps a
builder re-embeds the corpus with a newer snapshot and the trainer swaps it in (REALM_NOTES
§2.3, §2.6). Here:

- `LiveIndex` holds one version: the snapshot retriever (eval mode, no gradients) and a FAISS
  `IndexFlatIP` over its embeddings of every block, built in memory from the pre-tokenised ids
  (`RealmCorpus.doc_ids`). `search` embeds masked queries with the snapshot's query tower.
- `RefreshSchedule` parses Atlas-style schedules: "0-200:50,200-:100" = every 50 steps before
  step 200, then every 100; "never" = keep the initial index; a bare "50" = every 50 steps.
- `IndexVersions` persists each version (`v0003/`: vectors.npy, snapshot.safetensors, meta.json)
  under the run's checkpoint directory, written to a temporary name and renamed, so a training
  checkpoint can name the version it used and a resumed run retrieves from that same index.
  Versions no checkpoint names are deleted.
- `Refresher` runs refreshes `sync` (training waits: deterministic) or `async` (a worker embeds
  while training continues; the new version is installed at the first step boundary after it is
  ready, as the paper's index builder hands its index back). The worker is whatever `runner`
  the caller gives (a thread by default; the Prefect flow passes its task runner, so every
  refresh is a task run). While one refresh runs, a due one is skipped: the builder paces the
  refresh rate, as in the paper.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import faiss
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from realm_core.devices import autocast
from realm_core.errors import RealmError
from realm_core.io import atomic_path
from realm_core.modeling.embedder import RetrieverEmbedder

_SCHEDULE_PART = re.compile(r"^(\d+)-(\d*):(\d+)$")
_VERSION = re.compile(r"^v(\d{4,})$")


class RefreshSchedule:
    """When to refresh: `due(step)` is true at the steps the schedule string names."""

    def __init__(self, spec: str) -> None:
        self.spec = spec.strip()
        self.parts: list[tuple[int, int | None, int]] = []
        if self.spec in ("never", "-1", ""):
            return
        if self.spec.isdigit():
            self.parts = [(0, None, int(self.spec))]
        else:
            for part in self.spec.split(","):
                m = _SCHEDULE_PART.match(part.strip())
                if not m or int(m.group(3)) < 1 or (m.group(2) and int(m.group(2)) <= int(m.group(1))):
                    raise RealmError(f"refresh schedule {spec!r}: parts look like 'start-end:every' "
                                     f"(end may be empty; every >= 1), or 'never'")
                self.parts.append((int(m.group(1)), int(m.group(2)) if m.group(2) else None, int(m.group(3))))
        if any(p[2] == 0 for p in self.parts):
            raise RealmError(f"refresh schedule {spec!r}: an interval must be >= 1")

    @property
    def never(self) -> bool:
        """True when the schedule never refreshes."""
        return not self.parts

    def due(self, step: int) -> bool:
        """True when a refresh is due after optimizer step `step` (>= 1)."""
        for start, end, every in self.parts:
            if step > start and (end is None or step <= end):
                return (step - start) % every == 0
        return False


def embed_corpus(retriever: RetrieverEmbedder, doc_ids, *, precision: str = "fp32", batch_size: int = 64,
                 should_abort: Callable[[], bool] = lambda: False) -> np.ndarray:
    """Document embeddings [n, d] float32 of every pre-tokenised row of `doc_ids` (a `Ragged`),
    in length-sorted batches (little padding), no gradients, in `precision`."""
    tower, device = retriever.doc_tower, retriever.device
    lengths = doc_ids.lengths()
    order = np.argsort(lengths, kind="stable")
    out = np.empty((len(lengths), retriever.proj_size), dtype=np.float32)
    pad = retriever.inputs.pad_id
    was_training = tower.training
    tower.eval()
    try:
        with torch.inference_mode(), autocast(device, precision):
            for lo in range(0, len(order), batch_size):
                if should_abort():
                    raise RealmError("refresh aborted")
                rows = order[lo: lo + batch_size]
                width = int(lengths[rows].max())
                ids = np.full((len(rows), width), pad, dtype=np.int64)
                mask = np.zeros_like(ids)
                types = np.zeros_like(ids)
                for i, r in enumerate(rows):
                    seq = doc_ids[int(r)]
                    ids[i, : len(seq)] = seq
                    mask[i, : len(seq)] = 1
                    types[i, retriever_body_start(seq, retriever.inputs.sep_id): len(seq)] = 1
                emb = tower(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device),
                            torch.from_numpy(types).to(device))
                out[rows] = emb.float().cpu().numpy()
    finally:
        tower.train(was_training)
    return out


def retriever_body_start(seq: np.ndarray, sep_id: int) -> int:
    """Segment 1 starts after the first [SEP] of `[CLS] title [SEP] body [SEP]`."""
    hits = np.flatnonzero(seq == sep_id)
    return int(hits[0]) + 1 if len(hits) else len(seq)


@dataclass
class LiveIndex:
    """One index version: the snapshot retriever and a FAISS inner-product index over its vectors."""

    version: int
    step: int  # the training step whose weights the snapshot holds
    snapshot: RetrieverEmbedder
    vectors: np.ndarray
    seconds: float = 0.0
    index: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = faiss.IndexFlatIP(int(self.vectors.shape[1]))
        self.index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))
        self.snapshot.eval()
        for p in self.snapshot.parameters():
            p.requires_grad_(False)

    def search(self, queries: dict[str, torch.Tensor], k: int, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
        """(rows [n, k] int64, scores [n, k]) of the top-k blocks for each query batch."""
        device = self.snapshot.device
        with torch.inference_mode(), autocast(device, precision):
            q = self.snapshot.encode_queries(**{key: v.to(device) for key, v in queries.items()})
        scores, rows = self.index.search(np.ascontiguousarray(q.float().cpu().numpy()), k)
        return rows.astype(np.int64), scores


class IndexVersions:
    """Index versions on disk under `root` (one directory each, written atomically)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, version: int) -> Path:
        """Directory of `version`."""
        return self.root / f"v{version:04d}"

    def save(self, live: LiveIndex) -> Path:
        """Write `live` (replacing a same-numbered leftover of an earlier, abandoned run)."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(live.version)
        if final.exists():
            shutil.rmtree(final)
        with atomic_path(final) as tmp:
            tmp.mkdir()
            np.save(tmp / "vectors.npy", live.vectors, allow_pickle=False)
            state = {k: v.detach().cpu().contiguous() for k, v in live.snapshot.state_dict().items()}
            save_file(state, str(tmp / "snapshot.safetensors"))
            (tmp / "meta.json").write_text(json.dumps({"version": live.version, "step": live.step,
                                                       "seconds": live.seconds, "rows": int(len(live.vectors))}))
        return final

    def load(self, version: int, template: RetrieverEmbedder) -> LiveIndex:
        """Version `version`, its snapshot built on a copy of `template` (same architecture)."""
        path = self.path(version)
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            vectors = np.load(path / "vectors.npy", allow_pickle=False)
            state = load_file(str(path / "snapshot.safetensors"))
        except (OSError, ValueError) as exc:
            raise RealmError(f"{path}: cannot load index version {version} named by the checkpoint ({exc})") from None
        snapshot = copy.deepcopy(template)
        snapshot.load_state_dict(state)
        return LiveIndex(version=version, step=int(meta["step"]), snapshot=snapshot.to(template.device),
                         vectors=vectors, seconds=float(meta.get("seconds", 0.0)))

    def clean_temporary(self) -> None:
        """Remove what a killed writer left half written (at start, before any refresh runs)."""
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child.name.startswith(".") and not _VERSION.match(child.name):
                    shutil.rmtree(child, ignore_errors=True)

    def prune(self, keep: set[int], *, temporary: bool = True) -> None:
        """Delete every version not in `keep`, and with `temporary` the leftovers of killed writers
        (never while an async refresh may be writing one)."""
        if not self.root.is_dir():
            return
        for child in self.root.iterdir():
            m = _VERSION.match(child.name)
            if (m and int(m.group(1)) not in keep) or (temporary and not m and child.name.startswith(".")):
                shutil.rmtree(child, ignore_errors=True)


class FutureLike(Protocol):
    """What a runner's `submit` returns (concurrent.futures.Future fits)."""

    def done(self) -> bool: ...

    def result(self) -> Any: ...


class RefreshRunner(Protocol):
    """Where refresh jobs run: `run` blocks (sync mode), `submit` returns at once (async)."""

    def run(self, job: Callable[[], dict[str, Any]], version: int, step: int) -> dict[str, Any]: ...

    def submit(self, job: Callable[[], dict[str, Any]], version: int, step: int) -> FutureLike: ...


class ThreadRunner:
    """The default runner: the calling thread (sync) or one background thread (async)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def run(self, job, version: int, step: int) -> dict[str, Any]:
        return job()

    def submit(self, job, version: int, step: int) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="realm-refresh")
        return self._pool.submit(job)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


@dataclass
class RefreshRecord:
    """One installed refresh (JSON, carried in the training checkpoint)."""

    version: int
    snapshot_step: int
    installed_step: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "snapshot_step": self.snapshot_step, "installed_step": self.installed_step,
                "seconds": round(self.seconds, 2)}


class Refresher:
    """Keeps `holder.live` fresh on `schedule`, in `mode` "sync" or "async" (see module docstring).

    `holder` is the batch stream (it retrieves with `holder.live` and carries the refresh history
    in its checkpointed state); `retriever` is the live model whose snapshot each refresh embeds.
    """

    def __init__(self, holder, retriever: RetrieverEmbedder, doc_ids, versions: IndexVersions, *,
                 schedule: RefreshSchedule, mode: str = "sync", precision: str = "fp32", batch_size: int = 64,
                 runner: RefreshRunner | None = None, info: Callable[[str], None] = lambda m: None,
                 last_step: int | None = None, main: bool = True,
                 barrier: Callable[[], None] = lambda: None) -> None:
        if mode not in ("sync", "async"):
            raise RealmError(f"refresh mode must be 'sync' or 'async', got {mode!r}")
        self.holder, self.retriever, self.doc_ids, self.versions = holder, retriever, doc_ids, versions
        self.schedule, self.mode, self.precision, self.batch_size = schedule, mode, precision, batch_size
        self.runner = runner or ThreadRunner()
        self.info, self.last_step = info, last_step
        # Under torchrun (sync only) rank 0 embeds and saves; the others wait, then load the version.
        self.main, self.barrier = main, barrier
        self._pending: tuple[FutureLike, int, int] | None = None  # (future, version, snapshot step)
        self.skipped = 0
        self._abort = False

    def build(self, version: int, step: int, snapshot: RetrieverEmbedder) -> dict[str, Any]:
        """Embed the corpus with `snapshot` and save the version (runs on the runner)."""
        t0 = time.monotonic()
        vectors = embed_corpus(snapshot, self.doc_ids, precision=self.precision, batch_size=self.batch_size,
                               should_abort=lambda: self._abort)
        live = LiveIndex(version=version, step=step, snapshot=snapshot, vectors=vectors,
                         seconds=time.monotonic() - t0)
        self.versions.save(live)
        return {"version": version, "step": step, "seconds": round(live.seconds, 2), "rows": len(vectors)}

    @property
    def pending_version(self) -> int | None:
        """The version an async refresh is building now (None when none runs)."""
        return self._pending[1] if self._pending is not None else None

    def _snapshot(self) -> RetrieverEmbedder:
        snap = copy.deepcopy(self.retriever)
        snap.eval()
        return snap

    def after_step(self, step: int) -> None:
        """Install a finished async refresh; start (or run) one when the schedule says so."""
        if self._pending is not None and self._pending[0].done():
            self._install(step)
        if self.schedule.never or not self.schedule.due(step) or step == self.last_step:
            return  # an index made after the last step would never be used
        version = self.holder.next_version()
        if self.mode == "sync":
            if self.main:
                self.runner.run(lambda: self.build(version, step, self._snapshot()), version, step)
            self.barrier()
            self._pending = (_Done(), version, step)
            self._install(step)
        elif self._pending is not None:
            self.skipped += 1  # the builder is busy: it sets the pace, as in the paper
        else:
            snapshot = self._snapshot()
            self._pending = (self.runner.submit(lambda: self.build(version, step, snapshot), version, step),
                             version, step)

    def _install(self, step: int) -> None:
        future, version, snap_step = self._pending
        self._pending = None
        future.result()  # a failed refresh raises here, in the training thread
        live = self.versions.load(version, self.retriever)
        self.holder.install(live, RefreshRecord(version, snap_step, step, live.seconds))
        self.info(f"index v{version} (snapshot of step {snap_step}) live from step {step}: "
                  f"{len(live.vectors):,} blocks embedded in {live.seconds:.1f} s")

    def finish(self) -> None:
        """Stop a running async refresh: training is over, its index would never be used."""
        if self._pending is not None:
            self._abort = True
            try:
                self._pending[0].result()
            except RealmError as exc:
                if "refresh aborted" not in str(exc):  # only the abort we asked for is expected
                    raise
            finally:
                self._pending, self._abort = None, False
        if isinstance(self.runner, ThreadRunner):
            self.runner.close()


class _Done:
    def done(self) -> bool:
        return True

    def result(self) -> None:
        return None
