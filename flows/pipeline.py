"""Flow `pipeline`: `dvc repro [targets]` as a Prefect run (the UI's entry point).

    python -m flows.pipeline [TARGET ...] [--force]

The task runs DVC itself, so a run started from the UI produces exactly what `dvc repro` does on
the command line: same stages, same dvc.lock, same outputs. DVC's output streams into the run log;
the workspace's `dvc-workspace` concurrency limit (1) queues overlapping runs. Each stage DVC
starts is itself a Prefect flow run, listed in the UI next to this one.
"""

from __future__ import annotations

import argparse
import sys

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow, get_run_logger, task
from prefect.states import Failed

from flows.cli import quiet_reported_failures
from tasks.dvc_workspace import dvc_workspace, run_dvc

quiet_reported_failures()  # a served run whose `dvc repro` fails logs its error line, no traceback


@task(name="dvc_repro", cache_result_in_memory=False)
def dvc_repro(targets: list[str], force: bool) -> dict:
    """`dvc repro` holding the workspace slot; every output line goes to the log."""
    logger = get_run_logger()
    args = ["repro", *targets, *(["--force"] if force else [])]
    with dvc_workspace():
        logger.info("$ dvc %s", " ".join(args))
        code, output = run_dvc(args, logger.info)
    if code != 0:
        tail = [line for line in output.splitlines() if line.strip()][-1:] or [""]
        return Failed(message=f"dvc repro exited with {code}: {tail[0][:300]}")
    return {"targets": targets, "ran": [line.split("'")[1] for line in output.splitlines()
                                        if line.startswith("Running stage '")]}


@flow(name="pipeline")
def pipeline_flow(targets: list[str] | None = None, force: bool = False):
    """Reproduce the DVC pipeline (all stages, or `targets` such as ["build_index@ict"])."""
    state = dvc_repro(list(targets or []), force, return_state=True)
    result = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(result, dict):
        return Failed(message=state.message)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=pipeline_flow.__doc__)
    parser.add_argument("targets", nargs="*", help="dvc.yaml stages (default: all)")
    parser.add_argument("--force", action="store_true", help="rerun the stages even if up to date")
    args = parser.parse_args(argv)
    state = pipeline_flow(args.targets, args.force, return_state=True)
    if state.is_failed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    print(f"pipeline: {state.result()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
