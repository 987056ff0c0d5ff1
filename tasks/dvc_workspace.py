"""DVC from Prefect: one DVC process per workspace at a time, with its output in the run log.

DVC has no parallelism of its own and two DVC processes in one workspace fail on its lock
(treeverse/dvc#10465). Every Prefect task that runs DVC therefore holds the global concurrency
limit `dvc-workspace` (1 slot), created on first use, so a `pipeline` run from the UI, a
scheduled `reindex` commit and a second UI click queue instead of colliding.
"""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

DVC_LIMIT = "dvc-workspace"


def ensure_limit(limit: int = 1) -> None:
    """Create the global concurrency limit if the server does not have it yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(DVC_LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=DVC_LIMIT, limit=limit))
            except ObjectAlreadyExists:
                pass  # another process created it in between


@contextmanager
def dvc_workspace() -> Iterator[None]:
    """Hold the workspace's single DVC slot (waits while another run holds it)."""
    from prefect.concurrency.sync import concurrency

    ensure_limit()
    with concurrency(DVC_LIMIT, occupy=1, strict=True):
        yield


def run_dvc(args: list[str], log: Callable[[str], None], cwd: str | None = None) -> tuple[int, str]:
    """Run `python -m dvc ARGS` (this environment's DVC), streaming each output line to `log`;
    returns (exit code, full output)."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.strip():
            log(line.rstrip())
    return proc.wait(), "".join(lines)
