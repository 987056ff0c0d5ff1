"""Shard tasks on a local 2-worker Dask cluster give exactly the single-process result."""

from __future__ import annotations

import numpy as np
import pytest

from realm_core.config import BuildIndexConfig
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.retrieval import build_stage, embed, index
from tests.flows.test_retriever_flows import TINY, blocks  # noqa: F401  (module fixture: NQ gold-passage blocks)


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    model = RetrieverEmbedder.from_init("scratch", scratch_config=TINY, proj_size=16, max_doc_len=64, seed=3)
    return model.save_pretrained(tmp_path_factory.mktemp("dask") / "retriever")


def test_build_index_on_dask_equals_the_local_run(prefect_api, blocks, retriever, tmp_path):  # noqa: F811
    from flows.build_index import build_index_flow
    from flows.runners import shard_runner

    def cfg(name: str, **kw) -> BuildIndexConfig:
        return BuildIndexConfig(blocks=str(blocks), retriever=str(retriever), output_dir=str(tmp_path / name),
                                rows_per_shard=500, batch_size=64, metrics_file=str(tmp_path / f"{name}.json"), **kw)

    local_cfg, dask_cfg = cfg("local"), cfg("dask", workers=2, dask_address="local")
    local = build_index_flow(local_cfg)
    runner = shard_runner(dask_cfg.workers, dask_cfg.dask_address)
    assert type(runner).__name__ == "DaskTaskRunner"
    distributed = build_index_flow.with_options(task_runner=runner)(dask_cfg)
    assert distributed["rows"] == local["rows"] and distributed["shards_embedded"] == local["shards_embedded"] >= 2

    a, b = build_stage.embeddings_dir(local_cfg), build_stage.embeddings_dir(dask_cfg)
    assert np.array_equal(embed.load_ids(a), embed.load_ids(b))
    for (start_a, va), (start_b, vb) in zip(embed.iter_embeddings(a), embed.iter_embeddings(b)):
        assert start_a == start_b
        np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-6)  # same shard, same process-independent math
    queries = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    ids_a, _ = index.load_current(local_cfg.output_dir).search(queries, 10)
    ids_b, _ = index.load_current(dask_cfg.output_dir).search(queries, 10)
    assert np.array_equal(ids_a, ids_b)


def test_prepare_corpus_on_dask_equals_the_local_run(prefect_api, tmp_path):
    import pyarrow.parquet as pq

    from flows.prepare_corpus import prepare_corpus_flow
    from flows.runners import shard_runner
    from realm_core.config import PrepareCorpusConfig
    from realm_core.corpus.prepare import prepare_corpus
    from tests.conftest import WIKI_XML

    def cfg(name: str, **kw) -> PrepareCorpusConfig:
        return PrepareCorpusConfig(sources=[str(WIKI_XML / "wikibrain" / "*"), str(WIKI_XML / "wikipedia2vec" / "*")],
                                   output_dir=str(tmp_path / name), metrics_file=str(tmp_path / f"{name}.json"),
                                   chunk_pages=20, **kw)

    prepare_corpus(cfg("local", workers=1))
    dask_cfg = cfg("dask", workers=2, dask_address="local")
    result = prepare_corpus_flow.with_options(task_runner=shard_runner(2, "local"))(dask_cfg)
    local = pq.read_table(tmp_path / "local" / "blocks.parquet")
    distributed = pq.read_table(tmp_path / "dask" / "blocks.parquet")
    assert result["blocks"] == local.num_rows > 300
    assert distributed.equals(local)
