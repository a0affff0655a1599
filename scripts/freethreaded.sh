#!/usr/bin/env bash
# A free-threaded (no-GIL, PEP 703) CPython 3.13 for running the test suite with the GIL
# off:
#
#   scripts/freethreaded.sh          build it into $FT_DIR (a no-op when it is there)
#
# then, e.g.
#
#   PYTHON_GIL=0 CI=true make test PYTHON=.cache/py313t/bin/python3.13t \
#       VENV=.cache/venvs/py3.13t COV_MIN=0 PIP_EXTRA="'hypothesis<6.150'"
#
# $FT_DIR defaults to .cache/py313t in this work tree (.cache/ is git-ignored).  No
# free-threaded 3.13 is packaged for Debian 12, and pyenv's builds here have the GIL, so
# this compiles one (about 3 minutes on 2 cores) from the pristine upstream tarball of
# Debian trixie's python3.13 source package, fetched with apt from the mirror the machine
# already uses (no other download site is reachable from CI).
#
# Why the orig tarball and not Debian's patched tree: Debian's patches disable ensurepip,
# so `python -m venv` would make venvs without pip and `make test` could not install.
#
# This runs as root in CI, so it keeps to its own corner:
#   * Everything is done in a temporary directory under .cache/ which a trap removes on
#     every exit path (error, Ctrl-C, SIGTERM).
#   * The trixie deb-src line lives in a sources file in that temporary directory, and
#     apt is pointed at it with an isolated state (its own lists, cache and lock), so the
#     host's apt configuration and package lists are never changed.  Nothing is written
#     under /etc/apt.
#   * The interpreter is installed into a staging directory first and moved into place
#     only once it is complete, then checked; the stamp file is written last.  A failed or
#     interrupted run leaves no half-installed $FT_DIR behind a stamp.
#   * The only changes outside the work tree's .cache/ are the Debian build dependencies
#     (apt-get install, with one `apt-get update` if the install fails).
#
# Environment:
#   FT_DIR      where the interpreter goes (default: <repo>/.cache/py313t)
#   FT_MIRROR   the Debian mirror to fetch the source from (default: the host's own, read
#               from /etc/apt/sources.list and /etc/apt/sources.list.d/*.{list,sources})
#   FT_SUITE    the Debian suite whose python3.13 source is used (default: trixie)
#   FT_JOBS     make -j (default: the number of cores)
set -euo pipefail

T0=$SECONDS
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$REPO/.cache"
FT_DIR="${FT_DIR:-$CACHE/py313t}"
FT_SUITE="${FT_SUITE:-trixie}"
FT_JOBS="${FT_JOBS:-$(nproc)}"
FT_PY="$FT_DIR/bin/python3.13t"
STAMP="$FT_DIR/.executor-exporter-ready"
CONFIGURE_FLAGS=(--disable-gil "--prefix=$FT_DIR")
# What the stamp records: a different prefix or flags means a rebuild.
WANT="python3.13 from $FT_SUITE; configure ${CONFIGURE_FLAGS[*]}"

# Debian packages for the build: the compiler, and the -dev packages of every library an
# optional stdlib module links against.  ssl (pip's downloads), ctypes (libffi), venv and
# ensurepip (zlib, for the bundled pip wheel) are the ones the suite needs; the others keep
# the stdlib complete (bz2, lzma, sqlite3, readline, uuid, dbm, curses, tkinter, decimal's
# and pyexpat's libraries are bundled).  xz-utils unpacks the .tar.xz; ca-certificates is
# for pip over https.
BUILD_DEPS=(
    build-essential pkg-config xz-utils ca-certificates
    libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev libsqlite3-dev
    libreadline-dev uuid-dev libgdbm-dev libgdbm-compat-dev libncurses-dev tk-dev
)
# The modules checked after the build: a missing -dev package makes configure leave its
# module out silently, so each one is imported.
CHECK_MODULES="ssl ctypes zlib bz2 lzma sqlite3 readline _uuid dbm.gnu curses _decimal \
pyexpat hashlib venv ensurepip"

say() { echo "freethreaded.sh: $*"; }
die() {
    echo "freethreaded.sh: $*" >&2
    exit 1
}
elapsed() { echo "$((SECONDS - T0))s"; }

# --- already built? ----------------------------------------------------------------------
# The second run: the stamp matches and the interpreter starts.  Checked before taking
# the lock or touching apt, so it returns in well under a second.
ready() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] &&
        PYTHON_GIL=0 "$FT_PY" -c 'import sys; sys.exit(sys._is_gil_enabled())' 2>/dev/null
}
if ready; then
    say "ready: $FT_PY ($("$FT_PY" --version 2>&1), free-threaded) in $(elapsed)"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get installs the build dependencies)"
# Refuse a prefix that a mistaken FT_DIR could make dangerous: it is removed and replaced.
case "$FT_DIR" in
    /* ) ;;
    * ) die "FT_DIR must be an absolute path (got '$FT_DIR')" ;;
esac
case "${FT_DIR%/}" in
    "" | / | /usr | /usr/local | /bin | /etc | /opt | /root | /home | /tmp | /var \
        | "$REPO" | "$CACHE" | "$HOME")
        die "refusing FT_DIR=$FT_DIR" ;;
esac

mkdir -p "$CACHE" "$(dirname "$FT_DIR")"

# One build at a time (two CI jobs, or an engineer and CI, in the same work tree): the
# second waits for the first, then finds the stamp.
exec 9>"$FT_DIR.lock"
flock 9
if ready; then
    say "ready (built by another run meanwhile): $FT_PY in $(elapsed)"
    exit 0
fi

# --- the temporary directory and its trap -------------------------------------------------
WORK="$(mktemp -d "$CACHE/py313t-build.XXXXXX")"
cleanup() {
    local rc=$?
    # --one-file-system: nothing is mounted here, but should anything be, it is not followed.
    rm -rf --one-file-system -- "$WORK"
    if [ "$rc" -ne 0 ]; then
        echo "freethreaded.sh: FAILED (exit code $rc) after $(elapsed); $FT_DIR left as it was" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
# A signal runs the EXIT trap too (bash does not run it on an untrapped signal).
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

export DEBIAN_FRONTEND=noninteractive

# --- build dependencies -------------------------------------------------------------------
# Only the packages not installed yet are asked for: `apt-get install` of an installed
# package upgrades it (and its libraries: libssl3, zlib1g...) to the newest candidate,
# which is no business of this script.
missing=()
for pkg in "${BUILD_DEPS[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != installed ]; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    say "build dependencies: all installed"
else
    say "build dependencies: apt-get install ${missing[*]}"
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        # The host's package lists may be stale or absent (a fresh image): refresh once.
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
fi

# --- the source tarball -------------------------------------------------------------------
# The Debian mirror the machine uses: the URI of an enabled `deb` source for the host's own
# release (not the security archive, not a third-party repository), from one-line
# sources.list files or deb822 .sources files.
host_mirror() {
    if [ -n "${FT_MIRROR:-}" ]; then
        echo "$FT_MIRROR"
        return
    fi
    local codename
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    [ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release; set FT_MIRROR"
    local url
    url="$(
        {
            # One-line format: deb [options] URI SUITE COMPONENT...
            cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                | sed -E 's/#.*//; s/^\s*deb\s+(\[[^]]*\]\s+)?/deb /' \
                | awk -v c="$codename" '$1 == "deb" && $3 == c { print $2 }'
            # deb822 format: stanzas separated by blank lines.
            for f in /etc/apt/sources.list.d/*.sources; do
                [ -f "$f" ] || continue
                # Comment lines are dropped whole (a blank line would end the stanza).
                sed -E '/^\s*#/d; s/#.*//' "$f" | awk -v c="$codename" '
                    function flush() {
                        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " c " ") \
                            && tolower(enabled) != "no")
                            print uris
                        types = suites = uris = enabled = ""
                    }
                    /^[ \t]*$/ { flush(); next }
                    {
                        key = tolower($1); sub(/:$/, "", key)
                        val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                        if (key == "types") types = val
                        else if (key == "suites") suites = val
                        else if (key == "uris") uris = val
                        else if (key == "enabled") enabled = val
                    }
                    END { flush() }'
            done
        } | tr ' \t' '\n\n' | grep -E '^(https?|ftp)://' | head -n1
    )"
    [ -n "$url" ] || die "no Debian mirror for '$codename' found in /etc/apt; set FT_MIRROR"
    echo "${url%/}"
}

MIRROR="$(host_mirror)"
say "python3.13 source from $FT_SUITE on $MIRROR"

# An apt of our own: the one deb-src line, its own package lists, cache and lock, all in
# $WORK.  Only the keyring and the host's dpkg status (read-only) are shared.
APT_DIR="$WORK/apt"
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/parts" \
    "$APT_DIR/prefs"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$KEYRING" ] || die "$KEYRING missing (package debian-archive-keyring)"
echo "deb-src [signed-by=$KEYRING] $MIRROR $FT_SUITE main" >"$APT_DIR/sources.list"
APT_OPTS=(
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
    -o "Dir::Etc::SourceParts=$APT_DIR/parts"
    -o "Dir::Etc::PreferencesParts=$APT_DIR/prefs"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "Dir::Cache=$APT_DIR/cache"
    # A mirror serving a frozen snapshot has a Release file past its Valid-Until date.
    -o "Acquire::Check-Valid-Until=false"
    -o "APT::Get::List-Cleanup=false"
    # $WORK is mode 0700 (mktemp), so apt's unprivileged _apt user cannot write there;
    # download as root rather than have apt warn and fall back to it anyway.
    -o "APT::Sandbox::User=root"
)
apt-get "${APT_OPTS[@]}" update
mkdir -p "$WORK/src"
(cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source --download-only python3.13)

shopt -s nullglob
tarballs=("$WORK"/src/python3.13_*.orig.tar.xz)
shopt -u nullglob
[ ${#tarballs[@]} -eq 1 ] || die "expected one python3.13_*.orig.tar.xz, found: ${tarballs[*]:-none}"
TARBALL="${tarballs[0]}"
say "unpacking $(basename "$TARBALL") (the upstream tarball, without Debian's patches)"
mkdir -p "$WORK/build"
tar -xJf "$TARBALL" -C "$WORK/build" --strip-components=1
[ -x "$WORK/build/configure" ] || die "no configure script in $(basename "$TARBALL")"

# --- build and install --------------------------------------------------------------------
say "configure ${CONFIGURE_FLAGS[*]}"
(cd "$WORK/build" && ./configure "${CONFIGURE_FLAGS[@]}" >"$WORK/configure.log" 2>&1) || {
    tail -n 40 "$WORK/configure.log" >&2
    die "configure failed"
}
say "make -j$FT_JOBS (a few minutes)"
(cd "$WORK/build" && make -j"$FT_JOBS" >"$WORK/make.log" 2>&1) || {
    tail -n 60 "$WORK/make.log" >&2
    die "make failed"
}
# The build's own list of the optional modules it left out (a missing -dev package).
sed -n '/necessary bits to build these optional modules were not found/,/^$/p;
    /Failed to build these modules/,/^$/p;
    /Following modules built successfully but were removed/,/^$/p' "$WORK/make.log"

# Installed into a staging root (DESTDIR), then moved to $FT_DIR in one step.  The prefix
# compiled in is $FT_DIR itself, so the moved tree works where it lands.
say "make install (staged)"
(cd "$WORK/build" && make install DESTDIR="$WORK/stage" >"$WORK/install.log" 2>&1) || {
    tail -n 40 "$WORK/install.log" >&2
    die "make install failed"
}
[ -x "$WORK/stage$FT_PY" ] || die "make install made no $FT_PY"
rm -rf --one-file-system -- "$FT_DIR"
mv "$WORK/stage$FT_DIR" "$FT_DIR"

# --- check --------------------------------------------------------------------------------
say "checking $FT_PY"
PYTHON_GIL=0 "$FT_PY" -c '
import sys, sysconfig, ssl, ctypes
assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1, "not a free-threaded build"
assert not sys._is_gil_enabled(), "the GIL is on"
print(sys.version)
print(ssl.OPENSSL_VERSION)
'
for m in $CHECK_MODULES; do
    PYTHON_GIL=0 "$FT_PY" -c "import $m" || die "module $m missing from the build"
done
# venv with pip (the ensurepip that Debian's patches would have disabled).
PYTHON_GIL=0 "$FT_PY" -m venv "$WORK/venv"
PYTHON_GIL=0 "$WORK/venv/bin/python" -m pip --version
PYTHON_GIL=0 "$WORK/venv/bin/python" -c 'import sys; assert not sys._is_gil_enabled()'

echo "$WANT" >"$STAMP"
say "ready: $FT_PY ($("$FT_PY" --version 2>&1), free-threaded), built in $(elapsed)"
