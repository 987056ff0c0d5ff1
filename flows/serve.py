"""Serve the `pipeline` and `reindex` deployments from this process (no work pool needed).

    prefect server start --host 127.0.0.1 --port 4200 &        # the UI: http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.serve [--params FILE] [--set reindex.interval_s=600 ...]

- `pipeline`: `dvc repro [targets]` on demand (Run from the UI; parameters `targets`, `force`).
- `reindex`: on the `reindex.interval_s` / `reindex.cron` schedule from params.yaml, and whenever a
  `realm.retriever.saved` event arrives (pretrain_ict emits one when it exports a retriever). One run
  at a time: a run triggered while one is going is cancelled (`CANCEL_NEW`), since the running one
  already indexes the newest retriever it could see.
Both read params.yaml when a run starts, so edits apply to the next run without a restart.
A run that fails with an expected error (no retriever yet, a failing `dvc repro`) ends Failed with
that one line as its message, and logs no traceback (flows.cli.quiet_reported_failures).
"""

from __future__ import annotations

import sys
from datetime import timedelta

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger

from flows.cli import build_parser, load_config
from flows.pipeline import pipeline_flow
from flows.reindex import reindex_flow
from realm_core.errors import RealmError
from tasks.dvc_workspace import ensure_limit

RETRIEVER_SAVED = "realm.retriever.saved"


def deployments(overrides: list[str] | None = None, params_file: str | None = None):
    """The two RunnerDeployments, with the reindex schedule from params.yaml."""
    import argparse

    cfg = load_config("reindex", argparse.Namespace(params=params_file, overrides=list(overrides or [])))
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    schedule = {}
    if cfg.interval_s:
        schedule["interval"] = timedelta(seconds=cfg.interval_s)
    if cfg.cron:
        schedule["cron"] = cfg.cron
    reindex = reindex_flow.to_deployment(
        name="reindex", **schedule, concurrency_limit=one_at_a_time,
        parameters={"overrides": list(overrides or []), "params_file": params_file},
        triggers=[DeploymentEventTrigger(name="new retriever", expect={RETRIEVER_SAVED}, match={"prefect.resource.id": "realm.retriever.*"})],
        description="Incremental re-index with the newest retriever; swaps CURRENT atomically.",
    )
    pipeline = pipeline_flow.to_deployment(
        name="pipeline", concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        description="dvc repro [targets], exactly as on the command line.",
    )
    return pipeline, reindex


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("reindex")
    parser.prog = "python -m flows.serve"
    args = parser.parse_args(argv)
    try:
        pipeline, reindex = deployments(args.overrides, args.params)
        ensure_limit()
    except RealmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    serve(pipeline, reindex)
    return 0


if __name__ == "__main__":
    sys.exit(main())
