#!/usr/bin/env bash
# Developer entry point: ./dev.sh setup | demo | test | lint
#
# Every command first makes sure the machine is set up (Debian 12, as root): the system
# packages libguestfs needs, and a virtualenv at .venv that sees both Debian's guestfs bindings
# (not on PyPI) and the pip dependencies. Re-running is fast: nothing is installed twice.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  libguestfs-tools python3-guestfs python3-hivex libguestfs-xfs linux-image-amd64 qemu-utils
  python3-libnbd
  python3-venv e2fsprogs fdisk gdisk dosfstools mtools exfatprogs cryptsetup-bin xfsprogs ntfs-3g
  chromium chromium-driver
)
VENV=.venv
PY="$VENV/bin/python"

say() { printf '==> %s\n' "$*" >&2; }

setup_system() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "dev.sh: missing system packages: ${missing[*]}; run as root or install them" >&2
      exit 2
    fi
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

setup_venv() {
  # Debian's python3-guestfs lives in the system interpreter's dist-packages, hence
  # /usr/bin/python3 and --system-site-packages (see ../shared/FACTS.md).
  if [ ! -x "$PY" ] || ! "$PY" -c 'import guestfs' 2>/dev/null; then
    say "creating $VENV"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  fi
  # pip runs every time (a few seconds when nothing is missing): a stamp from an earlier run
  # once said "installed" for a virtualenv that lacked a dependency.
  say "installing imgscan (editable) and its Python dependencies into $VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -e '.[dev]'
}

setup() { setup_system; setup_venv; }

testdata_dir() { "$PY" testdata/build.py | tail -n 1; }

case "${1:-}" in
  setup)
    setup
    ;;
  demo)
    setup
    dir=$(testdata_dir)
    say "scanning the demo image $dir/demo.qcow2 (secrets redacted; exit code 1 means findings)"
    set +e
    "$VENV/bin/imgscan" scan "$dir/demo.qcow2"
    code=$?
    set -e
    say "imgscan exited with $code (0 clean, 1 findings, 2 error or incomplete coverage)"
    [ "$code" -le 1 ]
    ;;
  test)
    setup
    shift
    "$PY" -m pytest "$@"
    ;;
  lint)
    setup
    "$VENV/bin/ruff" check imgscan tests testdata benchmarks
    "$VENV/bin/ruff" format --check imgscan tests testdata benchmarks
    "$VENV/bin/mypy"
    ;;
  *)
    echo "usage: ./dev.sh setup | demo | test [pytest args] | lint" >&2
    exit 2
    ;;
esac
