#!/usr/bin/env bash
# The test command: formatting, lints, and every test (unit, integration, Python interop).
#
# Creates (once) a Python virtual environment with the interop packages of
# tests/interop/requirements.txt, cached under ~/.cache by the hash of that file, and points
# the interop tests at it through SEALTRAIL_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sealtrail-target}"

req=tests/interop/requirements.txt
hash=$(sha256sum "$req" | cut -c1-12)
venv="${SEALTRAIL_VENV:-$HOME/.cache/sealtrail-venv-$hash}"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "== creating Python environment $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  touch "$venv/.complete"
fi
export SEALTRAIL_PYTHON="$venv/bin/python"

echo "== cargo fmt --check"
cargo fmt --check
# `--features sql` adds `sealtrail sql` (DataFusion) to the default features: a superset, so one
# lint and one test run cover both (the layer's feature set is linted on its own below).
echo "== cargo clippy --features sql"
cargo clippy --all-targets --locked --features sql -- -D warnings
# The Lambda layer binary is built without the operator tools (scripts/build-layer.sh).
echo "== cargo clippy --no-default-features (the layer binary's feature set)"
cargo clippy --bin sealtrail --locked --no-default-features -- -D warnings
echo "== cargo test --features sql"
cargo test --locked --features sql "$@"
