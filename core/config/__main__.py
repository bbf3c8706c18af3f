"""``python -m core.config --limits-table``: print README.md's limits table."""

from __future__ import annotations

import argparse

from core.config.limits_table import limits_table


def main(argv: list[str] | None = None) -> int:
    """``python -m core.config --limits-table``: print the limits table (README.md's)."""
    parser = argparse.ArgumentParser(prog="python -m core.config")
    parser.add_argument("--limits-table", action="store_true", help="print the limits table")
    args = parser.parse_args(argv)
    if not args.limits_table:
        parser.print_help()
        return 2
    print(limits_table(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
