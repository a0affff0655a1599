#!/usr/bin/env bash
# Python 3.14 and 3.15 from a Debian sid chroot, for the tests and the conformance runs.
#
#   scripts/chroot.sh build              make the chroot (or finish a half-made one)
#   scripts/chroot.sh run CMD [ARG...]   run CMD in it, as root, with this work tree at /src
#   scripts/chroot.sh remove             delete it
#   scripts/chroot.sh status             say what is there
#
# The chroot is $SID_DIR (default .cache/sid in this work tree, git-ignored).  Debian's
# packages give the interpreters (python3.14, python3.15 and their -venv packages), their
# test suites (libpython3.X-testsuite) and promtool; see shared/spec/new-pythons.md.
#
# This runs as root, in CI too, so every mount it makes is kept away from the host:
#   * `run` makes its mounts (proc, a private tmpfs on /dev/shm, the work tree on /src)
#     inside a new private mount namespace and pid namespace (unshare).  The host never
#     sees them, and when the command ends, however it ends (SIGKILL included), the
#     kernel drops the mounts and kills whatever the command left running.  A trap
#     unmounts them as well, in case the namespace outlives the command.
#   * The host's /dev is never bound in: debootstrap made the chroot's own device nodes,
#     and with /dev bound an `rm -rf` of the chroot deletes the host's /dev/null and friends.
#   * `remove` (and `build`, before it starts over) refuses while `findmnt` lists anything
#     under the chroot, and deletes with `rm -rf --one-file-system`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SID_DIR="${SID_DIR:-$REPO/.cache/sid}"
STAMP="$SID_DIR/.executor-exporter-ready"
# What the chroot holds.  Changing this list rebuilds the chroot's packages on `build`.
PACKAGES=(
    python3.14 python3.14-venv python3.14-dev libpython3.14-testsuite
    python3.15 python3.15-venv python3.15-dev libpython3.15-testsuite
    ca-certificates gcc make procps prometheus
)

die() {
    echo "chroot.sh: $*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, mount and chroot need it)"
}

# The Debian mirror the machine itself uses (sources.list or deb822 .sources).
host_mirror() {
    if [ -n "${SID_MIRROR:-}" ]; then
        echo "$SID_MIRROR"
        return
    fi
    local url
    url="$(
        {
            grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                | sed -E 's/^\s*deb\s+(\[[^]]*\]\s+)?//' | awk '{print $1}'
            grep -hsiE '^\s*URIs:' /etc/apt/sources.list.d/*.sources \
                | sed -E 's/^\s*URIs:\s*//I' | tr ' ' '\n'
        } | grep -vE 'security|^\s*$' | head -n1
    )"
    [ -n "$url" ] || die "no Debian mirror found in /etc/apt; set SID_MIRROR"
    echo "$url"
}

mounts_under() {
    # Every mount point at or below the chroot, as the calling namespace sees them.
    findmnt -rn -o TARGET | awk -v d="$SID_DIR" '$0 == d || index($0, d "/") == 1'
}

remove() {
    need_root
    [ -e "$SID_DIR" ] || return 0
    local mounted
    mounted="$(mounts_under)"
    if [ -n "$mounted" ]; then
        die "refusing to remove $SID_DIR: still mounted under it:
$mounted"
    fi
    case "$SID_DIR" in
        / | /dev* | /proc* | /sys* | "$REPO" | "$HOME") die "refusing to remove $SID_DIR" ;;
    esac
    rm -rf --one-file-system -- "$SID_DIR"
}

in_chroot() {
    # Plain chroot for the build steps (no namespace needed: apt mounts nothing).
    chroot "$SID_DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

build() {
    need_root
    local want
    want="$(printf '%s\n' "${PACKAGES[@]}")"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        echo "chroot.sh: $SID_DIR is ready"
        return 0
    fi
    command -v debootstrap >/dev/null || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends debootstrap \
            || { apt-get update && apt-get install -y --no-install-recommends debootstrap; }
    }
    if [ ! -x "$SID_DIR/usr/bin/apt-get" ] || [ ! -f "$SID_DIR/.debootstrap-done" ]; then
        remove  # a half-made chroot: start over
        mkdir -p "$SID_DIR"
        local mirror
        mirror="$(host_mirror)"
        echo "chroot.sh: debootstrap sid into $SID_DIR"
        debootstrap --variant=minbase sid "$SID_DIR" "$mirror"
        touch "$SID_DIR/.debootstrap-done"
    fi
    cp /etc/resolv.conf "$SID_DIR/etc/resolv.conf"
    # The sid snapshot served here is frozen: its Release file is past its validity date.
    in_chroot apt-get -o Acquire::Check-Valid-Until=false update
    in_chroot apt-get -o Acquire::Check-Valid-Until=false install -y --no-install-recommends \
        "${PACKAGES[@]}"
    # pip reaches the package index through the host's certificate authorities.
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$SID_DIR/etc/ssl/certs/ca-certificates.crt"
    fi
    echo "$want" >"$STAMP"
    echo "chroot.sh: $SID_DIR is ready"
    in_chroot sh -c 'python3.14 --version; python3.15 --version'
}

# Runs inside the new namespaces (see `run`): mount, chroot, unmount.
unmount_all() {
    umount -l "$SID_DIR/src" 2>/dev/null || true
    umount -l "$SID_DIR/dev/shm" 2>/dev/null || true
    umount -l "$SID_DIR/proc" 2>/dev/null || true
}

inside() {
    local root="$SID_DIR"
    trap unmount_all EXIT
    mount -t proc proc "$root/proc"
    mkdir -p "$root/dev/shm" "$root/src"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
    mount --bind "$REPO" "$root/src"
    local rc=0
    chroot "$root" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" EXECUTOR_EXPORTER_CHROOT=sid \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off \
        /bin/sh -c 'cd /src && exec "$@"' sh "$@" || rc=$?
    return $rc
}

run() {
    need_root
    [ $# -gt 0 ] || die "usage: chroot.sh run CMD [ARG...]"
    [ -f "$STAMP" ] || die "$SID_DIR is not built: run scripts/chroot.sh build"
    # --kill-child: should this script die, the kernel kills the namespace's processes.
    exec unshare --mount --propagation private --pid --fork --kill-child -- \
        "$0" _inside "$@"
}

status() {
    if [ -f "$STAMP" ]; then
        echo "ready: $SID_DIR"
        chroot "$SID_DIR" /bin/sh -c 'python3.14 --version; python3.15 --version' 2>&1 || true
    elif [ -e "$SID_DIR" ]; then
        echo "half-made: $SID_DIR (scripts/chroot.sh build finishes it)"
    else
        echo "absent: $SID_DIR"
    fi
    local mounted
    mounted="$(mounts_under)"
    [ -z "$mounted" ] || printf 'mounted here:\n%s\n' "$mounted"
}

cmd="${1:-}"
shift || true
case "$cmd" in
    build) build ;;
    run) run "$@" ;;
    _inside) inside "$@" ;;
    remove) remove ;;
    status) status ;;
    *) die "usage: chroot.sh build | run CMD [ARG...] | remove | status" ;;
esac
