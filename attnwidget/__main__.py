"""The ``attnwidget`` command (also ``python -m attnwidget``).

Subcommands: ``report`` (see :mod:`attnwidget.report`) and ``version``.
``--help`` prints to stdout and exits 0; a missing or unknown subcommand prints
the usage to stderr and exits 2, as argparse does for every usage error.
"""

from __future__ import annotations

import argparse
import sys


def _version() -> str:
    from attnwidget import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    from attnwidget import report

    parser = argparse.ArgumentParser(
        prog="attnwidget",
        description="See, measure and teach transformer attention. In a notebook: "
                    "attnwidget.AttentionView(model, text).",
    )
    parser.add_argument("--version", action="version", version=f"attnwidget {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rep = sub.add_parser(
        "report", help="write an offline HTML report of every layer and head for one input",
        description="Write an offline HTML report of every layer's and head's attention for one input "
                    "(index.html, metrics.json and figures/*.png).",
    )
    report.add_arguments(rep)
    rep.set_defaults(func=report.run)
    ver = sub.add_parser("version", help="print the installed version",
                         description="Print the installed attnwidget version.")
    ver.set_defaults(func=lambda _args: print(f"attnwidget {_version()}") or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("attnwidget: error: a command is required (report or version); see attnwidget --help",
              file=sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
