#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and builds the engine.
# The venv lives outside the clone, under ~/.cache/vlm_collate/, keyed by a hash of
# requirements.txt and the Python version, so a fresh clone reuses a venv whose
# requirements have not changed. The Rust engine is built in place
# (python/vlm_collate/_engine.*.so); the Makefile puts this clone's python/ first on
# PYTHONPATH, so clones sharing a venv never import each other's package.
# Prints the venv path on stdout (its only line); progress goes to stderr, one line per
# slow step (creating the venv, installing requirements, building the engine), pip's
# own progress bar when stderr is a terminal. A run with nothing to do is silent.
#
# Installs nothing on the system (no apt, no root): the headless Chromium that the
# `inspect --html` browser test uses is opt-in, `make browser`
# (scripts/install_browser.sh); without it that test skips and says why.
#
# Safe to run concurrently (two `make` in two terminals, CI jobs sharing a cache):
# the whole set-up holds an exclusive flock on $cache/env.lock, so a second run waits
# for the first and then reuses its venv instead of deleting it half-installed.
#
#   bash scripts/env.sh            the venv and the engine
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
key="$( (cat "$root/requirements.txt"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
cache="${VLM_COLLATE_CACHE:-$HOME/.cache/vlm_collate}"
venv="$cache/venv-$key"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

say() { echo "vlm_collate: $*" >&2; }

for arg in "$@"; do
    case "$arg" in
        --browser) say "scripts/env.sh --browser is gone: env.sh installs nothing on the system; run \`make browser\` to install Chromium for the HTML view test" ;;
        *) say "scripts/env.sh: unknown argument $arg (it takes none)"; exit 2 ;;
    esac
done

# Runs a step with its output kept aside: shown only when the step fails.
quietly() {
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        say "failed: $*"
        exit 1
    fi
}

# pip with its own progress bar on stderr when that is a terminal; a quiet step otherwise.
pip_install() {
    if [ -t 2 ]; then
        if ! "$venv/bin/python" -m pip install --progress-bar on "$@" 1>&2; then
            say "failed: pip install $*"
            exit 1
        fi
    else
        quietly "$venv/bin/python" -m pip install -q "$@"
    fi
}

# One set-up at a time per cache folder (the venvs are shared by every clone).
mkdir -p "$cache"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/env.lock"
    if ! flock -n 9; then
        say "waiting for another scripts/env.sh to finish (lock: $cache/env.lock)"
        flock 9
    fi
else
    say "flock not found: concurrent first runs of scripts/env.sh are not serialised"
fi

started=$SECONDS
fresh=""
if [ ! -f "$venv/.complete" ]; then
    say "first run: creating the virtual environment (several GB, a few minutes; later runs reuse it)"
    say "[1/4] python -m venv $venv"
    rm -rf "$venv"
    quietly "$python" -m venv "$venv"
    say "[2/4] upgrading pip"
    quietly "$venv/bin/python" -m pip install -q --upgrade pip
    say "[3/4] pip install -r requirements.txt (torch and the test tools: the long step)"
    pip_install -r "$root/requirements.txt"
    touch "$venv/.complete"
    fresh=1
fi

export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
cd "$root"
engine="$(ls python/vlm_collate/_engine.*.so 2>/dev/null | head -n 1 || true)"
if [ ! -x "$venv/bin/vlm-collate" ]; then
    # First use of this venv: install the package (editable) for its `vlm-collate` script.
    say "${fresh:+[4/4] }building the Rust engine and installing vlm_collate in the venv (cargo, release)"
    quietly "$venv/bin/python" -m maturin develop --release --quiet
else
    # Build the engine in place; pip is not involved (no "Requirement already satisfied").
    if [ -z "$engine" ] || [ -n "$(find rust Cargo.toml Cargo.lock -newer "$engine" -print -quit 2>/dev/null)" ]; then
        say "building the Rust engine (cargo, release; the Rust sources changed)"
    fi
    quietly "$venv/bin/python" -m maturin develop --release --quiet --skip-install
fi
if [ -n "$fresh" ]; then say "ready in $((SECONDS - started)) s: $venv"; fi
echo "$venv"
