#!/usr/bin/env bash
# `make browser`: installs a headless Chromium for the one test that needs a browser
# (the `inspect --html` view, rendered and hovered in headless Chromium). Opt-in: `make
# test` installs nothing and skips that test, saying why, when no browser is found.
# On Debian/Ubuntu it runs `apt-get install chromium` (a system package with ~120
# dependencies; as root, or through sudo). Elsewhere it says what to install.
set -euo pipefail

say() { echo "vlm_collate: $*" >&2; }

for name in chromium chromium-browser; do
    if path="$(command -v "$name")"; then
        say "a browser is already installed: $path (the HTML view test will run)"
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get here: install Chromium with your system's package manager (a \`chromium\` or \`chromium-browser\` on PATH); the HTML view test skips until then"
    exit 1
fi

if [ "$(id -u)" = 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    say "installing chromium needs root (or sudo): run \`make browser\` as root"
    exit 1
fi

say "installing the system package chromium with apt-get (about 120 packages, a few hundred MB)"
say "for the headless-browser test of \`vlm-collate inspect --html\`; \`make test\` skips that test without it"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
say "installed: $(command -v chromium || command -v chromium-browser || echo 'chromium (not on PATH?)')"
