#!/usr/bin/env bash
# vchat and the seed's Jina Flow side by side on this machine, in one run: start to
# ready, idle and loaded RSS, and `vchat bench` over one user unthrottled and a
# sweep of users at 30 fps; then the vchat-only JPEG grid. Writes the table and
# the plot into BENCHMARKS.md (between the compare markers) and bench/compare.svg;
# raw figures stay in target/bench/compare/. Installs what it needs: a release
# build of vchat, and Jina 3.34 in target/jina-venv (scripts/jina-venv.sh).
#   bench/compare.sh                          # about 20 minutes on 2 cores
#   bench/compare.sh --repeats 1 --users 1,3,5 --grid ''   # a quick look
#   bench/compare.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p vchat-cli
scripts/jina-venv.sh
exec target/jina-venv/bin/python bench/compare.py "$@"
