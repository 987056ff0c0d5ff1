"""Which Prefect task runner runs a stage's shard tasks.

- `dask_address` set: prefect-dask's `DaskTaskRunner`, on the scheduler at that address
  ("tcp://host:8786"), or on a local cluster of `workers` single-threaded worker processes with
  "local". Shards are independent and write their own files, so the result is the same as on one
  machine (tests/flows/test_dask_runner.py checks it); the workers must see the same filesystem.
- otherwise `workers > 1`: a local process pool; `workers == 1`: this process.
"""

from __future__ import annotations


def shard_runner(workers: int, dask_address: str = ""):
    """A task runner for `workers` parallel shard tasks, on Dask when `dask_address` is given."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if dask_address:
        from prefect_dask import DaskTaskRunner

        if dask_address == "local":
            return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                                  "dashboard_address": None})
        return DaskTaskRunner(address=dask_address)
    if workers > 1:
        return ProcessPoolTaskRunner(max_workers=workers)
    return ThreadPoolTaskRunner(max_workers=1)
