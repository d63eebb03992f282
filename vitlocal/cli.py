"""The ``vitlocal`` command (``vitlocal --help``; also ``python -m vitlocal``)."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

import vitlocal


def _info(args: argparse.Namespace) -> int:
    """Print the versions and the compute device the library will use."""
    import einops
    import numpy
    import torch

    print(f"vitlocal {vitlocal.__version__}")
    print(f"python   {platform.python_version()}")
    print(f"torch    {torch.__version__}")
    print(f"einops   {einops.__version__}")
    print(f"numpy    {numpy.__version__}")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        print(f"device   cuda ({torch.cuda.device_count()}: {names})")
    else:
        print(f"device   cpu ({torch.get_num_threads()} threads)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitlocal",
        description="Locality in vision transformers: mechanisms, models and training.",
    )
    parser.add_argument("--version", action="version", version=f"vitlocal {vitlocal.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="print versions and the compute device")
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
