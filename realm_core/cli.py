"""The `realm` console script (pyproject `[project.scripts]`); also `python -m realm_core.cli`.

    realm ask "who got the first nobel prize in physics"
    realm ask --dataset wq --method realm --k 10 --json "..."

Expected failures (no trained model yet, an empty question, an unknown dataset or method, missing
corpus files, bad arguments) print one `error: ...` line on stderr and exit 1, without a
traceback. Only the answer goes to stdout: anything a library prints while loading is sent to
stderr, so `--json` output can be piped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import NoReturn, Sequence

from realm_core.ask import DEFAULT_BLOCKS, DEFAULT_MODELS_DIR, DEFAULT_WORDPIECES, NEWEST
from realm_core.errors import RealmError, first_line


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one `error: ...` line and exit code 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """`realm` and its subcommands."""
    parser = _Parser(prog="realm", description="REALM/ORQA open-domain question answering.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    ask = sub.add_parser(
        "ask", help="answer a question with the newest fine-tuned model, showing its evidence",
        description="Answer a question with a fine-tuned open-QA model (a `finetune_qa` output) and show the "
                    "retrieved evidence blocks. Paths are relative to the current directory.")
    ask.add_argument("question", nargs="+", help="the question (several words are joined with spaces)")
    ask.add_argument("--dataset", default="nq", help="whose fine-tuned models to use: nq, wq or ct (default nq)")
    ask.add_argument("--method", default=NEWEST,
                     help=f"a method directory under <models-dir>/<dataset>/ (orqa, realm, ...), or {NEWEST} "
                          f"(default): the one whose qa.json was written last")
    ask.add_argument("--k", type=int, default=5,
                     help="evidence blocks to show (default 5); p(z|x) exists for the ones the reader read "
                          "(its beam, 5)")
    ask.add_argument("--json", action="store_true",
                     help="print one JSON object: question, answer, score, method, model_dir, evidence")
    ask.add_argument("--models-dir", default=DEFAULT_MODELS_DIR, help=f"default {DEFAULT_MODELS_DIR}")
    ask.add_argument("--wordpieces", default=DEFAULT_WORDPIECES,
                     help=f"the tokenized corpus (default {DEFAULT_WORDPIECES})")
    ask.add_argument("--blocks", default=DEFAULT_BLOCKS, help=f"the corpus blocks (default {DEFAULT_BLOCKS})")
    ask.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `realm`; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (1, already printed)
        return exc.code if isinstance(exc.code, int) else 1
    if args.command is None:
        parser.print_help(sys.stderr)
        return 1
    from realm_core.ask import ask, format_answer

    try:
        with contextlib.redirect_stdout(sys.stderr):
            answer = ask(" ".join(args.question), dataset=args.dataset, method=args.method, k=args.k,
                         models_dir=args.models_dir, wordpieces=args.wordpieces, blocks=args.blocks,
                         device=args.device)
    except RealmError as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(answer.to_json(), ensure_ascii=False, indent=2) if args.json else format_answer(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
