"""``python -m attnwidget report ...``: see :mod:`attnwidget.report`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m attnwidget report TEXT [--model minilm|tiny|PATH] [--out DIR] [--no-png]\n"
              "       python -m attnwidget report --help   (every option explained)")
        return 0 if argv else 2
    if argv[0] != "report":
        print(f"error: command: expected 'report', got {argv[0]!r}", file=sys.stderr)
        return 2
    from attnwidget.report import main as report_main

    return report_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
