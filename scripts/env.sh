#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and builds the engine into it.
# The venv lives outside the clone, under ~/.cache/vlm_collate/, keyed by a hash of
# requirements.txt and the Python version, so a fresh clone reuses a venv whose
# requirements have not changed. Prints the venv path on the last line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
key="$( (cat "$root/requirements.txt"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
cache="${VLM_COLLATE_CACHE:-$HOME/.cache/vlm_collate}"
venv="$cache/venv-$key"

if [ ! -f "$venv/.complete" ]; then
    echo "vlm_collate: creating $venv (first run downloads torch, several GB)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -r "$root/requirements.txt" >&2
    touch "$venv/.complete"
fi

# Headless Chromium for the browser check of `vlm-collate inspect --html` (tests/test_cli.py).
# Idempotent, and never fails the setup: without apt (or root) that one test skips.
if ! command -v chromium >/dev/null 2>&1 && [ "${VLM_COLLATE_NO_CHROMIUM:-0}" != 1 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "vlm_collate: installing Debian's chromium for the HTML view test" >&2
        (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq chromium) >&2 \
            || echo "vlm_collate: could not install chromium; the HTML browser test will skip" >&2
    fi
fi

# Build the Rust engine and install this clone's package (editable) into the venv.
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
(cd "$root" && "$venv/bin/python" -m maturin develop --release --quiet >&2)
echo "$venv"
