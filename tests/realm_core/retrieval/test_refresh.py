"""IndexRefresher: the re-indexing a training loop calls, synchronously or in the background."""

from __future__ import annotations

import threading
import time

import pytest

from realm_core.config import BuildIndexConfig
from realm_core.errors import RealmError
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.retrieval import index
from realm_core.retrieval.refresh import IndexRefresher, newest_retriever, resolve_retriever
from tests.realm_core.retrieval.test_embed import TINY, small_blocks


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refresh")
    exports = tmp / "exports"
    for step, seed in ((100, 0), (200, 1), (300, 2)):
        RetrieverEmbedder.from_init("scratch", scratch_config=TINY, proj_size=16, max_doc_len=64, seed=seed) \
            .save_pretrained(exports / f"step_{step:07d}")
        time.sleep(0.01)  # distinct mtimes: "newest" is the last written
    return small_blocks(tmp), exports


def cfg(blocks, root) -> BuildIndexConfig:
    return BuildIndexConfig(blocks=str(blocks), retriever="unused", output_dir=str(root), rows_per_shard=20,
                            batch_size=16, metrics_file=str(root) + ".json")


def test_newest_and_named_retrievers(setup, tmp_path):
    _, exports = setup
    assert newest_retriever(exports).name == "step_0000300"
    assert resolve_retriever(f"newest:{exports}") == exports / "step_0000300"
    assert resolve_retriever(str(exports / "step_0000100")) == exports / "step_0000100"
    with pytest.raises(RealmError, match="no retriever"):
        resolve_retriever(f"newest:{tmp_path}")
    with pytest.raises(RealmError, match="not a retriever"):
        resolve_retriever(str(tmp_path))


def test_sync_refresh_publishes_each_retriever(setup, tmp_path):
    blocks, exports = setup
    refresher = IndexRefresher(cfg(blocks, tmp_path / "index"), mode="sync")
    first = refresher.refresh(exports / "step_0000100")
    assert index.current_version(tmp_path / "index") == first
    second = refresher.refresh(exports / "step_0000200")
    assert second != first and index.current_version(tmp_path / "index") == second
    assert refresher.last_metrics["rows_embedded"] == refresher.last_metrics["rows"]  # new encoder: nothing reused


def test_async_refresh_runs_in_the_background_and_keeps_only_the_newest_request(setup, tmp_path):
    blocks, exports = setup
    refresher = IndexRefresher(cfg(blocks, tmp_path / "index"), mode="async")
    try:
        assert refresher.refresh(exports / "step_0000100") is None  # returns at once
        refresher.refresh(exports / "step_0000200")  # queued while the first runs
        refresher.refresh(exports / "step_0000300")  # replaces the queued request
        newest = refresher.wait()
        live = index.load_current(tmp_path / "index")
        from realm_core.retrieval.embed import encoder_hash

        assert live.meta["version"] == newest
        assert live.meta["embeddings"]["encoder_hash"] == encoder_hash(exports / "step_0000300")
        assert refresher.poll() is None  # nothing new since
    finally:
        refresher.close()


def test_async_errors_surface_at_poll(setup, tmp_path):
    blocks, exports = setup
    bad = cfg(blocks, tmp_path / "index").model_copy(update={"blocks": str(tmp_path / "missing.parquet")})
    refresher = IndexRefresher(bad, mode="async")
    refresher.refresh(exports / "step_0000100")
    with pytest.raises(RealmError, match="missing.parquet"):
        refresher.wait()
    refresher.close()


@pytest.mark.parametrize("surface", ["wait", "poll"])
def test_async_failure_with_a_queued_refresh_behind_it_is_not_lost(setup, tmp_path, surface):
    # Regression: when a failing refresh had a request queued behind it, starting the queued one
    # replaced the failed future and its error was never raised. Only the instance's `_run` is
    # patched (the first call blocks, then fails): the bug is in the scheduling, not the build.
    blocks, exports = setup
    refresher = IndexRefresher(cfg(blocks, tmp_path / "index"), mode="async")
    release, calls, real_run = threading.Event(), [], refresher._run

    def run(path):
        calls.append(path)
        if len(calls) == 1:
            assert release.wait(timeout=60)
            raise RealmError("first refresh failed")
        return real_run(path)

    refresher._run = run
    try:
        refresher.refresh(exports / "step_0000100")
        refresher.refresh(exports / "step_0000200")  # queued while the first runs
        assert refresher.poll() is None  # nothing published, nothing failed yet
        release.set()
        with pytest.raises(RealmError, match="first refresh failed"):
            if surface == "wait":
                refresher.wait()
            else:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    refresher.poll()  # raises once the first refresh has failed
                    time.sleep(0.01)
        newest = refresher.wait()  # the error is reported once; the queued refresh still published
        assert calls == [exports / "step_0000100", exports / "step_0000200"]
        assert newest is not None and newest == index.current_version(tmp_path / "index")
        assert refresher.poll() is None
    finally:
        refresher.close()  # nothing unreported left: does not raise
