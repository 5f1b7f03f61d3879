"""The `disco` command: the one entry point (`disco = cluster.main:main`).

Each package's `cli.register` adds its own subcommands (`arc_data`: data; `trainer`: train, eval,
predict, runs; `tuning`: sweep, best, pull, compare; `cluster`: submit, jobs). This module sits in
the top package because it imports all of them. Handlers import their heavy dependencies (torch,
ray) lazily so `disco --help` and `disco data ...` stay fast.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError as _ValidationError

from arc_data import __version__
from arc_data import cli as data_cli
from arc_data.errors import DiscoError
from cluster import cli as cluster_cli
from trainer import cli as trainer_cli
from tuning import cli as tuning_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disco",
        description="Train Tiny Recursive Models with Deep Improvement Supervision on ARC, on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"disco {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_cli.register(sub)
    trainer_cli.register(sub)
    tuning_cli.register(sub)
    cluster_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DiscoError as e:
        for line in str(e).splitlines():
            print(f"disco: error: {line}", file=sys.stderr)
        return 2
    except _ValidationError as e:
        print(f"disco: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `disco data show ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("disco: interrupted", file=sys.stderr)
        return 130
    return 0


def _one_line(e) -> str:
    from trainer.config import suggest_key

    parts = []
    for err in e.errors():
        field = ".".join(str(x) for x in err["loc"]) or "config"
        hint = suggest_key(err["loc"]) if err["type"] == "extra_forbidden" and e.title == "RunSpec" else None
        parts.append(f"{field}: {err['msg']}" + (f" (did you mean {hint}?)" if hint else ""))
    return "invalid configuration: " + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
