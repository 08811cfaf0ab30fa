#!/bin/sh
# Install mirrord for production, the way ./dev install runs it:
#   - a virtualenv at $PREFIX (default /opt/mirrord) holding the pinned, hashed runtime
#     dependencies (requirements.lock) and a wheel built from this tree;
#   - /usr/local/bin/mirrord, a symlink to $PREFIX/bin/mirrord;
#   - the systemd unit (ExecStart and Documentation point into $PREFIX), the sysusers
#     and tmpfiles entries, and the README and example configuration under
#     $PREFIX/share/doc/mirrord, with the nginx and rsyncd configurations to copy into place
#     (never installed over an operator's own).
# Running it again upgrades in place. /etc/mirrord/mirrord.yaml is never written.
#
# ROOT=/some/dir installs the system files under that directory instead of /, runs
# systemd-sysusers and systemd-tmpfiles on it (--root), and leaves systemctl alone; the
# test suite installs with ROOT and PREFIX in a temporary directory.
# A virtualenv names its own path in its scripts: install with PREFIX where it will run.
set -eu
if [ $# -ne 0 ]; then
    echo "usage: [PREFIX=/opt/mirrord] [ROOT=/] $0" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/opt/mirrord}
ROOT=${ROOT:-}
PYTHON=${PYTHON:-python3}

case "$PREFIX" in
    /*) ;;
    *) echo "install: PREFIX must be an absolute path, got $PREFIX" >&2; exit 2 ;;
esac

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT INT TERM

if [ ! -x "$PREFIX/bin/python" ]; then
    "$PYTHON" -m venv "$PREFIX"
fi
pip() { "$PREFIX/bin/python" -m pip -q --disable-pip-version-check "$@"; }
pip install --require-hashes -r requirements.lock

# Build from a copy: an in-tree build leaves build/ behind, and stale modules in it would
# end up in the next wheel.
cp -R pyproject.toml README.md mirrord "$build/"
pip wheel --no-deps --wheel-dir "$build/dist" "$build"
pip install --no-deps --force-reinstall "$build"/dist/mirrord-*.whl

doc="$PREFIX/share/doc/mirrord"
install -d "$doc"
install -m 0644 README.md config/mirrord.example.yaml config/mirrord-alerts.yml \
    config/nginx-mirrord.conf config/rsyncd-mirrord.conf "$doc/"

install -d "$ROOT/usr/local/bin" "$ROOT/etc/systemd/system" \
    "$ROOT/usr/lib/sysusers.d" "$ROOT/usr/lib/tmpfiles.d"
ln -sfn "$PREFIX/bin/mirrord" "$ROOT/usr/local/bin/mirrord"
sed "s|/opt/mirrord/|$PREFIX/|g" systemd/mirrord.service > "$build/mirrord.service"
install -m 0644 "$build/mirrord.service" "$ROOT/etc/systemd/system/mirrord.service"
install -m 0644 systemd/mirrord.sysusers "$ROOT/usr/lib/sysusers.d/mirrord.conf"
install -m 0644 systemd/mirrord.tmpfiles "$ROOT/usr/lib/tmpfiles.d/mirrord.conf"

version=$("$PREFIX/bin/mirrord" --version)
if [ -n "$ROOT" ]; then set -- --root="$ROOT"; fi
systemd-sysusers "$@" mirrord.conf
systemd-tmpfiles "$@" --create mirrord.conf
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl try-restart mirrord.service  # an upgrade: restart it if it runs
fi
echo "installed $version in $PREFIX; unit $ROOT/etc/systemd/system/mirrord.service"
