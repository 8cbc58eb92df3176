#!/usr/bin/env bash
# System packages the project needs beyond Python: Chromium, which the report tests use to
# open the generated HTML page headless and screenshot it (tests/reports).
# Installs only what is missing, so it is cheap to call from `make` every time.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium: already installed ($(command -v chromium))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: chromium is missing and this system has no apt-get; install Chromium with" \
         "your package manager so that \`chromium\` is on PATH" >&2
    exit 1
fi

# root runs apt-get directly; anyone else needs sudo
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "error: chromium is missing; installing it needs root: run this script as root" \
             "or install the Debian package 'chromium' yourself" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium
echo "chromium: installed ($(command -v chromium))"
