"""``scripts/chroot.sh run`` leaves nothing behind on the host, however its command ends.

CI runs the suite and CPython's suites on 3.14 and 3.15 in a Debian sid chroot, as root,
under ``.ci/step.py``'s time limits.  The chroot's mounts (proc, a tmpfs on /dev/shm, the
work tree on /src) are made in a private mount namespace, and its processes in a pid
namespace of their own.  These tests check, on the host, what that is meant to give:

* while the command runs, none of its mounts is visible to the host;
* a step that runs out of time ends every process of the chroot, and with them the mount
  namespace that held the mounts;
* so does a SIGKILL of ``chroot.sh`` itself, which no trap can see (``unshare
  --kill-child``: the kernel ends the namespace).

They need root and a built chroot (``scripts/chroot.sh build``, which CI runs before the
suite); elsewhere, and inside the chroot itself, they are skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
CHROOT_SH = REPO / "scripts" / "chroot.sh"
STEP = REPO / ".ci" / "step.py"
SID_DIR = Path(os.environ.get("SID_DIR", REPO / ".cache" / "sid"))

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="namespaces are Linux's"),
    pytest.mark.skipif(
        sys.platform == "linux" and os.geteuid() != 0, reason="chroot.sh needs root"
    ),
    pytest.mark.skipif(
        os.environ.get("EXECUTOR_EXPORTER_CHROOT") is not None, reason="inside the chroot"
    ),
    pytest.mark.skipif(
        not (SID_DIR / ".executor-exporter-ready").is_file(),
        reason=f"no chroot at {SID_DIR} (scripts/chroot.sh build)",
    ),
]

# Inside the chroot: say that /src is mounted there, then wait to be stopped.
PROBE = "grep -q ' /src ' /proc/self/mounts && echo MOUNTED; exec sleep 600"


def _chrooted() -> dict[int, str]:
    """Every live process whose root is the chroot, with its mount namespace."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/root") == str(SID_DIR):
                found[int(entry)] = os.readlink(f"/proc/{entry}/ns/mnt")
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    return found


def _host_mounts_under_chroot() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    return [t for t in targets if t == str(SID_DIR) or t.startswith(f"{SID_DIR}/")]


def _live(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start(command: list[str]) -> tuple[subprocess.Popen[str], int, str]:
    """Start ``command``; wait for the probe's ``sleep`` in the chroot: (process, the
    sleep's host pid, its mount namespace)."""
    assert not _chrooted(), "a process of an earlier run is still in the chroot"
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "MOUNTED"
    wait_until(lambda: bool(_chrooted()), timeout=30)
    pid, namespace = next(iter(_chrooted().items()))
    assert namespace != os.readlink("/proc/self/ns/mnt"), "the chroot shares our mounts"
    assert _host_mounts_under_chroot() == [], "the chroot's mounts are visible on the host"
    return proc, pid, namespace


def _end(proc: subprocess.Popen[str]) -> None:
    # Not communicate(): a leftover process of the chroot would hold the pipe open.
    proc.kill()
    proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()


def _assert_nothing_left(pid: int, namespace: str) -> None:
    wait_until(lambda: not _live(pid), timeout=30)
    assert not _chrooted()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                assert os.readlink(f"/proc/{entry}/ns/mnt") != namespace, entry
            except OSError:
                continue
    assert _host_mounts_under_chroot() == []


def test_a_step_out_of_time_ends_the_chroot_with_its_mounts() -> None:
    command = [sys.executable, str(STEP), "--step", "chroot probe", "--limit", "5", "--"]
    proc, pid, namespace = _start([*command, "bash", str(CHROOT_SH), "run", "sh", "-c", PROBE])
    try:
        assert proc.wait(timeout=90) == 124
    finally:
        _end(proc)
    _assert_nothing_left(pid, namespace)


def test_a_sigkill_of_chroot_sh_ends_the_chroot_with_its_mounts() -> None:
    proc, pid, namespace = _start(["bash", str(CHROOT_SH), "run", "sh", "-c", PROBE])
    try:
        # chroot.sh has exec'd unshare: this is the process a trap would have run in.
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _end(proc)
    _assert_nothing_left(pid, namespace)


def test_remove_refuses_while_something_is_mounted_under_the_chroot(tmp_path: Path) -> None:
    # A fake chroot with a tmpfs on it, in a mount namespace of this test's own.
    fake = tmp_path / "sid"
    (fake / "proc").mkdir(parents=True)
    script = (
        f"mount -t tmpfs tmpfs {fake}/proc && "
        f"SID_DIR={fake} bash {CHROOT_SH} remove; echo rc=$?; ls -d {fake}"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    assert "refusing to remove" in result.stdout, result.stdout
    assert "rc=1" in result.stdout, result.stdout
    assert str(fake) in result.stdout.splitlines()[-1], result.stdout
    assert fake.is_dir()
    # Unmounted (the namespace is gone), the same call removes it.
    subprocess.run(
        ["bash", str(CHROOT_SH), "remove"],
        env={**os.environ, "SID_DIR": str(fake)},
        check=True,
        timeout=60,
    )
    assert not fake.exists()
