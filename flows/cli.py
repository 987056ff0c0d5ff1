"""The command line every stage shares: `python -m flows.<stage> [--params FILE] [--set k=v ...]`.

`--params FILE` is merged over the repository's params.yaml (section by section, key by key), then
each `--set section.key=value` is applied. Expected errors (bad params, bad input) print one line
and exit 1, with no traceback; `--help` lists every field of the stage's config with its doc.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

from realm_core.config import STAGES, apply_overrides, deep_merge, field_docs, load_stage_config, read_params_file
from realm_core.errors import RealmError

REPO_PARAMS = Path("params.yaml")
ENGINE_RERAISE = "Engine execution exited with unexpected exception"


class _ReportedFailureFilter(logging.Filter):
    """Keeps an expected failure (a flow or task that *returned* `Failed(message=...)`) to its
    one-line message in Prefect's run logs.

    - In a deployment run (`python -m flows.serve`), Prefect 3.8's engine asks the finished flow
      run for its result, which re-raises a returned Failed state as `FailedRun`, and logs that
      with a traceback through its own internals, to the run log and the serving process's
      stderr. The run is Failed with its message either way, and "Finished in state
      Failed('...')" is logged just before: the record is dropped.
    - A task that returns a Failed state is logged "Task run failed with state: ..." with
      `exc_info=True` outside any exception, which prints a stray "NoneType: None": that
      record keeps its message, without the empty exception.
    Exceptions a flow or task raises (real bugs) are not `FailedRun` and still log in full.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        if record.msg != ENGINE_RERAISE or not record.exc_info:
            return True
        from prefect.exceptions import FailedRun

        return not isinstance(record.exc_info[1], FailedRun)


def quiet_reported_failures() -> None:
    """Install `_ReportedFailureFilter` on Prefect's flow- and task-run loggers (idempotent)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ReportedFailureFilter) for f in logger.filters):
            logger.addFilter(_ReportedFailureFilter())


def build_parser(stage: str) -> argparse.ArgumentParser:
    cls = STAGES[stage]
    lines = [f"{stage} parameters (params.yaml section '{stage}'; override with --set {stage}.KEY=VALUE):", ""]
    for name, doc, default in field_docs(cls):
        shown = "required" if default is None and cls.model_fields[name].is_required() else f"default: {default!r}"
        lines.append(f"  {name}  ({shown})")
        lines.extend(textwrap.wrap(doc, width=92, initial_indent="      ", subsequent_indent="      "))
    parser = argparse.ArgumentParser(
        prog=f"python -m flows.{stage}",
        description=(cls.__doc__ or "").strip(),
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--params", metavar="FILE", help="YAML merged over ./params.yaml (e.g. a CI or experiment profile)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one field; the value is parsed as YAML (2, true, [a, b]); repeatable")
    return parser


def load_config(stage: str, args: argparse.Namespace):
    params: dict[str, Any] = read_params_file(REPO_PARAMS) if REPO_PARAMS.is_file() else {}
    source = str(REPO_PARAMS)
    if args.params:
        params = deep_merge(params, read_params_file(args.params))
        source = f"{REPO_PARAMS} + {args.params}"
    params = apply_overrides(params, args.overrides)
    return load_stage_config(stage, params, source=source + (" + --set" if args.overrides else ""))


def main(stage: str, run: Callable[[Any], Any], preflight: Callable[[Any], None] | None = None,
         argv: list[str] | None = None) -> int:
    """Parse args, validate the config (and inputs, via `preflight`), run the flow.

    `run(cfg)` returns a Prefect final state; a failed state's message is the error line.
    """
    args = build_parser(stage).parse_args(argv)
    try:
        cfg = load_config(stage, args)
        if preflight is not None:
            preflight(cfg)  # fail fast, before a Prefect server starts
        state = run(cfg)
    except RealmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: {stage} interrupted; finished checkpoints are kept, rerun to resume", file=sys.stderr)
        return 130
    if state is not None and state.is_failed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    return 0
