"""The docs say what the code and the package metadata say."""

from __future__ import annotations

import re
from pathlib import Path

from executor_exporter import _stdlib

ROOT = Path(__file__).resolve().parents[1]


def _minor(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def test_the_supported_pythons_agree() -> None:
    """README's ranges, pyproject's classifiers and the versions whose internals were read
    (``_stdlib.CHECKED_VERSIONS``) name the same Pythons."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    classified = [
        _minor(v) for v in re.findall(r'"Programming Language :: Python :: (3\.\d+)"', pyproject)
    ]
    assert classified == sorted(classified)
    assert classified == list(_stdlib.CHECKED_VERSIONS)
    readme = (ROOT / "README.md").read_text()
    ranges = re.findall(r"\b(3\.\d+) to (3\.\d+)\b", readme)
    assert ranges, "README names no range of Pythons"
    for low, high in ranges:
        assert (_minor(low), _minor(high)) == (classified[0], classified[-1]), (low, high)
