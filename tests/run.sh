#!/usr/bin/env bash
# The test command: every Rust test (unit, property, integration on both I/O
# drivers) and the Python client test against the real binary. Sets up its
# own Python venv (pytest, websockets, PyJWT, selenium for the dashboard's
# browser test) on first use, and installs the system packages it needs
# (tests/system-packages.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/system-packages.sh
# The browser test must run here, not skip.
export WSHANDLER_REQUIRE_BROWSER=1
cargo test
cargo test --manifest-path loadtest/Cargo.toml
VENV=${WSHANDLER_VENV:-$HOME/.cache/wshandler-venv}
if [[ ! -x $VENV/bin/pytest ]] || ! "$VENV/bin/python" -c 'import websockets, jwt, selenium' 2> /dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check pytest 'websockets>=12' 'pyjwt>=2' 'selenium>=4'
fi
target=${CARGO_TARGET_DIR:-target}
WSHANDLER_BIN=$target/debug/wshandler "$VENV/bin/pytest" -q tests/python
