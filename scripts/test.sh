#!/usr/bin/env bash
# Runs every test: unit tests, and end-to-end tests that start the real binaries on
# loopback (including the real Jina client). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/jina-venv.sh
cargo build --workspace --bins
cargo test --workspace
