#!/usr/bin/env bash
# Builds the sdist and, from it, the wheel (python -m build); installs the wheel, not editable, with
# [all] into a fresh virtualenv on the newest Python 3.11-3.13 this machine has (SMOKE_PYTHON=... to
# choose); runs .ci/smoke_wheel.py there from a folder outside the repository.
# Usage: .ci/smoke_wheel.sh [--demo-steps N]   (everything goes in a temporary folder, removed at exit)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

# `python3.13` may be a pyenv shim that fails when 3.13 is not selected, so try each candidate.
find_python() {
    local version candidate
    for version in 3.13 3.12 3.11; do
        for candidate in "python$version" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/"python$version"; do
            if "$candidate" -c 'import sys, venv' >/dev/null 2>&1; then
                command -v "$candidate" || echo "$candidate"
                return
            fi
        done
    done
    echo "smoke_wheel: no Python 3.11-3.13 found" >&2
    return 1
}
unset PYTHONPATH
python="${SMOKE_PYTHON:-$(find_python)}"
work="$(mktemp -d "${TMPDIR:-/tmp}/mjx_biomech_wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "smoke_wheel: $("$python" -V) ($python) in $work"

SECONDS=0
"$python" -m venv "$work/build-env"
"$work/build-env/bin/python" -m pip install -q build
"$work/build-env/bin/python" -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel="$(ls "$work"/dist/*.whl)"
echo "smoke_wheel: built $(basename "$wheel") in ${SECONDS} s"

SECONDS=0
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "$wheel[all]"
echo "smoke_wheel: installed with [all] in ${SECONDS} s"

cp "$repo/.ci/smoke_wheel.py" "$work/smoke_wheel.py"
cd "$work"
SECONDS=0
"$work/venv/bin/python" -I "$work/smoke_wheel.py" "$@"
echo "smoke_wheel: smoke ran in ${SECONDS} s"
