"""``--compare``: the same selection with the stdlib classes, then with ours, each in a
fresh interpreter, and what differs.

* failing with ours only: library bugs (they fail the run);
* failing with both: the environment or the test suite (they fail the run too, until
  fixed or excluded with a named reason in ``selection.EXCLUDED``);
* failing with the stdlib only: listed, not fatal.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .running import final_line

ENTRY = Path(__file__).resolve().parents[1] / "conformance.py"
#: Options that ``--compare`` sets itself for each side.
_OWN_OPTIONS = ("--compare", "--stdlib")


def _forwarded(argv: list[str]) -> list[str]:
    """The command line minus what --compare decides (``--report FILE`` included)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _OWN_OPTIONS or arg.startswith("--report="):
            pass
        elif arg == "--report":
            skip = True
        else:
            out.append(arg)
    return out


def _run_side(mode: str, argv: list[str], tmp: Path) -> tuple[int, dict[str, Any] | None, float]:
    report = tmp / f"{mode}.json"
    cmd = [sys.executable, str(ENTRY), *_forwarded(argv), "--report", str(report)]
    if mode == "stdlib":
        cmd.append("--stdlib")
    print(f"\n{'#' * 78}\n# conformance --compare: {mode} classes, in a fresh process", flush=True)
    print(f"# {' '.join(cmd)}\n{'#' * 78}", flush=True)
    start = time.monotonic()
    rc = subprocess.run(cmd, check=False).returncode
    elapsed = time.monotonic() - start
    data = json.loads(report.read_text()) if report.is_file() else None
    return rc, data, elapsed


def _failed(data: dict[str, Any] | None) -> set[str]:
    if data is None:
        return set()
    return {t for t, o in data["outcomes"].items() if o == "failed"}


def _section(title: str, ids: list[str], *reports: dict[str, Any] | None) -> None:
    print(f"  {title} ({len(ids)}):")
    for tid in ids:
        why = next((r["summaries"].get(tid) for r in reports if r and tid in r["summaries"]), "")
        print(f"    {tid}: {why}" if why else f"    {tid}")


def run_compare(argv: list[str]) -> int:
    """Both runs, then the comparison; the last line is our run's totals."""
    with tempfile.TemporaryDirectory(prefix="conformance-compare-") as tmp:
        std_rc, std, std_s = _run_side("stdlib", argv, Path(tmp))
        ours_rc, ours, ours_s = _run_side("ours", argv, Path(tmp))

    print(f"\n{'=' * 78}\nconformance comparison, Python {sys.version.split()[0]}")
    for mode, rc, data, seconds in (
        ("stdlib", std_rc, std, std_s),
        ("ours", ours_rc, ours, ours_s),
    ):
        if data is None:
            print(f"  {mode:6}: no report (exit status {rc}) after {seconds:.1f}s")
            continue
        c = data["counts"]
        print(
            f"  {mode:6}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
            f" in {seconds:.1f}s (exit status {rc}); resource tracker reports: "
            f"{len(data['tracker_reports'])}, env changed: {len(data['env_changed'])}"
        )
    std_failed, ours_failed = _failed(std), _failed(ours)
    _section("failing with ours only (library bugs)", sorted(ours_failed - std_failed), ours)
    _section(
        "failing with both (environment or test suite: fix, or exclude with a reason)",
        sorted(ours_failed & std_failed),
        ours,
        std,
    )
    _section("failing with the stdlib only", sorted(std_failed - ours_failed), std)
    if ours is None:
        print("conformance: 0 passed, 1 failed, 0 skipped")
        return 1
    print(final_line(ours["counts"]), flush=True)
    return 0 if ours_rc == 0 and not ours_failed else 1
