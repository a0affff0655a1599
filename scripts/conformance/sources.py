"""Finding CPython's ``test_concurrent_futures`` for the running interpreter.

In order of preference:

1. ``--testsuite-dir`` when it is given (an explicit request wins);
2. the running interpreter's own installed ``test/test_concurrent_futures`` (the package
   of 3.12+ or the single file of 3.10/3.11): pyenv and python.org builds ship it, and so
   does Debian's ``libpython3.X-testsuite`` once installed (the sid chroot has it);
3. Debian's ``libpython3.X-testsuite`` fetched with ``apt-get download`` and extracted
   under the cache directory (git-ignored), as for the main venv's Python 3.11, whose
   pyenv build lacks that test;
4. for a version Debian never shipped in a release it still serves (3.12: bookworm has
   3.11, trixie and sid 3.13+), Ubuntu's package of it (24.04 "noble" has 3.12), found in
   the archive's package index and checked against the index's SHA-256.

Nothing is copied into the repository.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

MODULE = "test_concurrent_futures"
PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
TESTSUITE_PACKAGE = f"libpython{PY_VERSION}-testsuite"

#: Where a testsuite package Debian does not serve is looked for: (archive, suites).
UBUNTU_ARCHIVE = os.environ.get("UBUNTU_MIRROR", "http://archive.ubuntu.com/ubuntu")
UBUNTU_SUITES = {"3.12": ("noble-updates", "noble")}


@dataclass(frozen=True)
class TestSource:
    """Where the tests come from: a package directory (3.12+) or a single ``.py`` file."""

    path: Path
    origin: str  # "installed", "downloaded" or "testsuite-dir"
    detail: str = ""

    @property
    def is_package(self) -> bool:
        return self.path.is_dir()

    def describe(self) -> str:
        layout = "package" if self.is_package else "single file"
        detail = f", {self.detail}" if self.detail else ""
        return f"{self.path} ({self.origin}{detail}; {layout})"


def _is_tests(path: Path) -> bool:
    """Whether ``path`` is the test package (with its ``util.py``) or the single file."""
    if path.is_dir():
        return path.name == MODULE and (path / "__init__.py").is_file()
    return path.name == f"{MODULE}.py" and path.is_file()


def find_in_tree(root: Path) -> Path | None:
    """The test package or file at or under ``root`` (an extracted package, a ``test/``)."""
    if _is_tests(root):
        return root
    bases = (root / "usr" / "lib" / f"python{PY_VERSION}" / "test", root / "test", root)
    for base in bases:
        for candidate in (base / MODULE, base / f"{MODULE}.py"):
            if _is_tests(candidate):
                return candidate
    if not root.is_dir():
        return None
    found = sorted(p for p in root.rglob(f"{MODULE}*") if _is_tests(p))
    return found[0] if found else None


def installed_source() -> TestSource | None:
    """The running interpreter's own ``test/test_concurrent_futures``, if installed."""
    try:
        import test
    except ImportError:
        return None
    if not getattr(test, "__file__", None):
        return None
    base = Path(test.__file__).parent
    for candidate in (base / MODULE, base / f"{MODULE}.py"):
        if _is_tests(candidate):
            return TestSource(candidate, "installed", f"Python {sys.version.split()[0]}")
    return None


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _apt_download(workdir: Path) -> Path:
    """``apt-get download`` the testsuite package (one ``apt-get update`` if needed)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise SystemExit(
            "conformance: this Python has no test_concurrent_futures and apt-get/dpkg are "
            f"not found; pass --testsuite-dir with an extracted {TESTSUITE_PACKAGE}"
        )
    download = ["apt-get", "download", TESTSUITE_PACKAGE]
    result = _run(download, cwd=workdir)
    if result.returncode != 0:
        print("conformance: apt-get download failed, running apt-get update once", flush=True)
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            raise SystemExit(f"conformance: apt-get update failed:\n{update.stderr}")
        result = _run(download, cwd=workdir)
    debs = sorted(workdir.glob(f"{TESTSUITE_PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        raise SystemExit(f"conformance: could not download {TESTSUITE_PACKAGE}:\n{result.stderr}")
    return debs[-1]


def _index_entry(index: bytes, package: str) -> dict[str, str] | None:
    """The stanza of ``package`` in a Debian-format ``Packages`` index, as a dict."""
    for stanza in index.decode("utf-8", "replace").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Package") == package:
            return fields
    return None


def _ubuntu_download(workdir: Path) -> Path:
    """Download the testsuite package from Ubuntu's archive, its SHA-256 checked."""
    suites = UBUNTU_SUITES.get(PY_VERSION, ())
    if not suites:
        raise SystemExit(f"conformance: no archive known to serve {TESTSUITE_PACKAGE}")
    for suite in suites:
        url = f"{UBUNTU_ARCHIVE}/dists/{suite}/universe/binary-amd64/Packages.gz"
        print(f"conformance: looking for {TESTSUITE_PACKAGE} in {url}", flush=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                index = gzip.decompress(response.read())
        except OSError as exc:
            raise SystemExit(f"conformance: cannot read {url}: {exc}") from exc
        entry = _index_entry(index, TESTSUITE_PACKAGE)
        if entry is None or "Filename" not in entry or "SHA256" not in entry:
            continue
        deb = workdir / Path(entry["Filename"]).name
        with urllib.request.urlopen(f"{UBUNTU_ARCHIVE}/{entry['Filename']}", timeout=120) as r:
            deb.write_bytes(r.read())
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        if digest != entry["SHA256"]:
            raise SystemExit(f"conformance: {deb.name}: SHA-256 {digest} is not the index's")
        return deb
    raise SystemExit(f"conformance: {TESTSUITE_PACKAGE} is in none of {suites}")


def _download(workdir: Path) -> Path:
    """The testsuite package: Debian's when apt knows it, else from Ubuntu's archive."""
    if PY_VERSION in UBUNTU_SUITES:
        return _ubuntu_download(workdir)
    return _apt_download(workdir)


def fetch_debian(cache_dir: Path, refresh: bool) -> Path:
    """Return the cached extracted package root, downloading it when missing."""
    target = cache_dir / TESTSUITE_PACKAGE
    if refresh:
        shutil.rmtree(target, ignore_errors=True)
    if target.is_dir() and find_in_tree(target) is not None:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"conformance: fetching {TESTSUITE_PACKAGE} into {target}", flush=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="download-") as tmp:
        work = Path(tmp)
        deb = _download(work)
        root = work / "root"
        extract = _run(["dpkg", "-x", str(deb), str(root)])
        if extract.returncode != 0:
            raise SystemExit(f"conformance: dpkg -x {deb.name} failed:\n{extract.stderr}")
        version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()
        (root / "VERSION").write_text(f"{TESTSUITE_PACKAGE} {version or deb.name}\n")
        if find_in_tree(root) is None:
            raise SystemExit(f"conformance: {deb.name} has no {MODULE}")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(root, target)  # whole, so an interrupted fetch leaves no half cache
    return target


def _version_note(root: Path, found: Path) -> str:
    """The ``VERSION`` note written beside a fetched package, if any."""
    for parent in (root, *found.parents):
        version = parent / "VERSION"
        if version.is_file():
            return version.read_text().strip()
    return ""


def locate(testsuite_dir: Path | None, cache_dir: Path, refresh: bool) -> TestSource:
    """Find the tests as the module docstring says; exit with a message if none."""
    if testsuite_dir is not None:
        root = testsuite_dir.resolve()
        found = find_in_tree(root)
        if found is None:
            raise SystemExit(f"conformance: no {MODULE} (package or .py) under {root}")
        return TestSource(found, "testsuite-dir", _version_note(root, found))
    installed = installed_source()
    if installed is not None:
        return installed
    root = fetch_debian(cache_dir, refresh)
    found = find_in_tree(root)
    if found is None:  # pragma: no cover - fetch_debian checked it
        raise SystemExit(f"conformance: no {MODULE} under {root}")
    return TestSource(found, "downloaded", _version_note(root, found))
