"""The ``eqspike`` command line. Thin: it parses arguments (``eqspike.app.parsers``) and calls the
command, which builds a RunConfig and calls library code."""

from __future__ import annotations

import shlex
import sys

from transformers.utils import logging

from eqspike.app.parsers import build_parser
from eqspike.errors import EqspikeError
from eqspike.runtime.distributed import from_environment

DISTRIBUTED_COMMANDS = ("distill",)


def _quiet_transformers() -> None:
    """eqspike shows its own progress; transformers' per-file loading and saving bars are noise in logs."""
    logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        world_size = from_environment().world_size
        if world_size > 1 and args.command not in DISTRIBUTED_COMMANDS:
            raise EqspikeError(
                f"this command runs in one process; under torchrun only "
                f"{', '.join(DISTRIBUTED_COMMANDS)} is distributed (WORLD_SIZE={world_size})"
            )
        if args.command != "selfcheck":
            _quiet_transformers()
        return args.run(args)
    except EqspikeError as error:
        print(f"eqspike {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "distill" and args.output_dir and not args.seeds:
            hint = f"; continue with: eqspike distill --resume --output-dir {shlex.quote(args.output_dir)}"
        elif args.command == "distill":
            hint = "; continue with the same command and --resume"
        else:
            hint = ""
        print(f"eqspike {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
