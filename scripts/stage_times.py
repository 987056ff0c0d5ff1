"""Wall seconds per stage of a logged `dvc repro`, from its own timestamps.

    dvc repro 2>&1 | tee repro.log
    python scripts/stage_times.py repro.log

A stage's time runs from its first timestamped log line (Prefect's, `HH:MM:SS.fff | ...`) to
the next stage's first line, so the process and Prefect server start of the next stage (7-10 s)
is counted with the stage before it; the last stage ends at its own last line. The log must not
cross midnight. Prints one `stage seconds` line per stage and the span from first to last line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

STAGE = re.compile(r"Running stage '([^']+)'")
STAMP = re.compile(r"(\d\d):(\d\d):(\d\d)\.\d+ \|")


def stage_times(lines: list[str]) -> tuple[list[tuple[str, int]], int]:
    """[(stage, wall seconds)] in run order, and the whole span in seconds."""
    stages: list[list] = []  # [name, first second, last second]
    for line in lines:
        if m := STAGE.match(line):
            stages.append([m.group(1), None, None])
        elif stages and (t := STAMP.match(line)):
            sec = int(t[1]) * 3600 + int(t[2]) * 60 + int(t[3])
            if stages[-1][1] is None:
                stages[-1][1] = sec
            stages[-1][2] = sec
    stages = [s for s in stages if s[1] is not None]
    if not stages:
        return [], 0
    out = [(name, (stages[i + 1][1] if i + 1 < len(stages) else last) - first)
           for i, (name, first, last) in enumerate(stages)]
    return out, stages[-1][2] - stages[0][1]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/stage_times.py REPRO_LOG", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        print(f"{path}: cannot read ({exc.strerror})", file=sys.stderr)
        return 1
    times, span = stage_times(lines)
    if not times:
        print(f"{path}: no 'Running stage' lines with timestamps; not a dvc repro log", file=sys.stderr)
        return 1
    for name, seconds in times:
        print(f"{name:28} {seconds:6d}")
    print(f"first to last line: {span / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
