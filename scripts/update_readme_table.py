"""Keep the README's metric table equal to `python -m executor_exporter table`.

The table lives between two marker lines in README.md:

    <!-- metrics-table:start -->
    ...generated...
    <!-- metrics-table:end -->

    python scripts/update_readme_table.py           # rewrite the block in place
    python scripts/update_readme_table.py --check   # exit 1 and show a diff if it drifted

Exit codes: 0 up to date (or rewritten), 1 out of date (--check), 2 the README or the
generator is broken (missing markers, `table` command failed).
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = "<!-- metrics-table:start -->"
END = "<!-- metrics-table:end -->"


class TableError(Exception):
    """The README or the table generator cannot be used."""


def generate_table() -> str:
    """Return the output of `python -m executor_exporter table`, without trailing blanks."""
    env = dict(os.environ)
    # Works from a checkout even when the package is not installed in this interpreter.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [sys.executable, "-m", "executor_exporter", "table"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise TableError(
            f"`python -m executor_exporter table` exited {proc.returncode}:\n{proc.stderr}"
        )
    table = proc.stdout.strip("\n").rstrip()
    if not table:
        raise TableError("`python -m executor_exporter table` printed nothing")
    return table


def render(readme: str, table: str) -> str:
    """Return `readme` with the block between the markers replaced by `table`."""
    lines = readme.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == START]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(starts) != 1 or len(ends) != 1 or starts[0] > ends[0]:
        raise TableError(
            f"README must contain exactly one line {START!r} followed later by exactly "
            f"one line {END!r} (found {len(starts)} start and {len(ends)} end markers)"
        )
    start, end = starts[0], ends[0]
    block = [START + "\n", table + "\n", END + "\n"]
    tail = lines[end + 1 :]
    if end == len(lines) - 1 and not lines[end].endswith("\n"):
        block[-1] = END  # keep a README that ends without a newline as it was
    return "".join(lines[:start] + block + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 with a diff if out of date"
    )
    parser.add_argument(
        "--readme", type=Path, default=ROOT / "README.md", help="default: README.md"
    )
    args = parser.parse_args(argv)

    readme_path: Path = args.readme
    try:
        current = readme_path.read_text(encoding="utf-8")
        wanted = render(current, generate_table())
    except (OSError, TableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if current == wanted:
        print(f"{readme_path.name}: metric table is up to date")
        return 0
    if args.check:
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            fromfile=f"{readme_path.name} (committed)",
            tofile=f"{readme_path.name} (from `python -m executor_exporter table`)",
        )
        sys.stdout.writelines(diff)
        print(
            f"\n{readme_path.name}: metric table is out of date; run `make docs` to update it",
            file=sys.stderr,
        )
        return 1
    readme_path.write_text(wanted, encoding="utf-8", newline="")
    print(f"{readme_path.name}: metric table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
