#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and builds the engine.
# The venv lives outside the clone, under ~/.cache/vlm_collate/, keyed by a hash of
# requirements.txt and the Python version, so a fresh clone reuses a venv whose
# requirements have not changed. The Rust engine is built in place
# (python/vlm_collate/_engine.*.so); the Makefile puts this clone's python/ first on
# PYTHONPATH, so clones sharing a venv never import each other's package.
# Prints the venv path on the last line and nothing else on success.
#
#   bash scripts/env.sh            the venv and the engine
#   bash scripts/env.sh --browser  also a headless Chromium for the test of the
#                                  `inspect --html` view (the test set-up only; on
#                                  Debian/Ubuntu as root it runs `apt-get install
#                                  chromium`; VLM_COLLATE_NO_CHROMIUM=1 skips it)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
key="$( (cat "$root/requirements.txt"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
cache="${VLM_COLLATE_CACHE:-$HOME/.cache/vlm_collate}"
venv="$cache/venv-$key"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Runs a step with its output kept aside: shown only when the step fails.
quietly() {
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "vlm_collate: failed: $*" >&2
        exit 1
    fi
}

if [ ! -f "$venv/.complete" ]; then
    echo "vlm_collate: creating $venv (first run downloads torch, several GB)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    quietly "$venv/bin/python" -m pip install -q --upgrade pip
    quietly "$venv/bin/python" -m pip install -q -r "$root/requirements.txt"
    touch "$venv/.complete"
fi

if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1 \
    && [ "${VLM_COLLATE_NO_CHROMIUM:-0}" != 1 ]; then
    # Never fails the set-up: without apt (or root) the browser test skips.
    if command -v apt-get >/dev/null 2>&1; then
        echo "vlm_collate: installing Debian's chromium (a system package) for the HTML view test" >&2
        (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq chromium) \
            >"$log" 2>&1 || echo "vlm_collate: could not install chromium; the HTML browser test will skip" >&2
    fi
fi

export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
cd "$root"
if [ ! -x "$venv/bin/vlm-collate" ]; then
    # First use of this venv: install the package (editable) for its `vlm-collate` script.
    quietly "$venv/bin/python" -m maturin develop --release --quiet
else
    # Build the engine in place; pip is not involved (no "Requirement already satisfied").
    quietly "$venv/bin/python" -m maturin develop --release --quiet --skip-install
fi
echo "$venv"
