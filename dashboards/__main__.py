"""``python -m dashboards``: write dashboards/json from the code; ``--check``: only compare.

Exit status 1 with ``--check`` when a committed file differs from what the
code generates (run without it to update them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dashboards.build import generate

JSON_DIR = Path(__file__).resolve().parent / "json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare only, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generate().items():
        path = JSON_DIR / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            JSON_DIR.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if args.check and stale:
        print(f"out of date (run python -m dashboards): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
