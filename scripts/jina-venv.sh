#!/usr/bin/env bash
# Installs Jina 3.34 (the real Jina, as a test peer) into target/jina-venv, with the
# pins of tests/jina/constraints.txt. Does nothing when it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/jina-venv
if "$VENV/bin/python" -c 'import jina, docarray' 2>/dev/null; then
    exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "jina-venv: installing python3-venv" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
echo "jina-venv: installing Jina 3.34 into $VENV (about a minute, ~150 MB)" >&2
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -c tests/jina/constraints.txt jina==3.34.0
"$VENV/bin/python" -c 'import jina; print("jina-venv: jina", jina.__version__)' >&2
