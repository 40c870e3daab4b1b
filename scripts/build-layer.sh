#!/usr/bin/env bash
# Builds the AWS Lambda layer: target/lambda/sealtrail-layer.zip holding
#   extensions/sealtrail      the agent, started by Lambda as an external extension
#   sealtrail/config.toml     its configuration (/opt/sealtrail/config.toml; default: config/lambda.toml)
#
# The binary must run on Amazon Linux 2023 (glibc 2.34), so it is linked against glibc 2.34
# with cargo-zigbuild (installed with the `ziglang` and `cargo-zigbuild` PyPI packages into a
# cached virtual environment when missing). Without them: a static musl build when that
# target is installed, else a native build. Whatever the build, the script checks the highest
# GLIBC_ symbol version the binary needs and fails if it is newer than MAX_GLIBC, and fails if
# the stripped binary is over 20 MiB.
#
# Usage: scripts/build-layer.sh [--config FILE] [--native]
#   --config FILE  the configuration to put in the layer (default: config/lambda.toml)
#   --native       skip cargo-zigbuild and musl: build for this machine (the check still runs)
# Environment: MAX_GLIBC (default 2.34), CARGO_TARGET_DIR, SEALTRAIL_ZIG_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."

max_glibc="${MAX_GLIBC:-2.34}"
max_bytes=$((20 * 1024 * 1024))
config=config/lambda.toml
native=0
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --native) native=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build-layer: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -f "$config" ] || { echo "build-layer: no configuration file $config" >&2; exit 2; }

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${SEALTRAIL_ZIG_VENV:-$HOME/.cache/sealtrail-zig-venv}"

have_zigbuild() {
  command -v cargo-zigbuild >/dev/null 2>&1 || return 1
  command -v zig >/dev/null 2>&1 || python3 -c 'import ziglang' >/dev/null 2>&1
}

mode=native
if [ "$native" = 0 ]; then
  export PATH="$venv/bin:$PATH"
  if ! have_zigbuild; then
    echo "== installing cargo-zigbuild and ziglang into $venv"
    if python3 -m venv "$venv" >/dev/null 2>&1 \
      && "$venv/bin/pip" install --quiet --disable-pip-version-check ziglang cargo-zigbuild; then
      :
    else
      echo "build-layer: cannot install cargo-zigbuild/ziglang; trying other builds" >&2
    fi
  fi
  if have_zigbuild; then
    mode=zig
  elif rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    mode=musl
  fi
fi

# The layer profile (Cargo.toml: whole-program LTO, cold crates optimised for size) without the
# operator tools (`query`, `segments`, `scan`, `tail`, `top`): the extension only seals.
build_flags="--profile layer --locked --no-default-features"

case "$mode" in
  zig)
    echo "== cargo zigbuild --profile layer (glibc $max_glibc)"
    cargo zigbuild $build_flags --bin sealtrail --target "x86_64-unknown-linux-gnu.$max_glibc"
    bin="$target_dir/x86_64-unknown-linux-gnu/layer/sealtrail" ;;
  musl)
    echo "== cargo build --profile layer --target x86_64-unknown-linux-musl"
    cargo build $build_flags --bin sealtrail --target x86_64-unknown-linux-musl
    bin="$target_dir/x86_64-unknown-linux-musl/layer/sealtrail" ;;
  native)
    echo "== cargo build --profile layer (native glibc: $(ldd --version | head -1))"
    cargo build $build_flags --bin sealtrail
    bin="$target_dir/layer/sealtrail" ;;
esac

# The newest glibc symbol version the binary needs (none for a static build).
needed=$(objdump -T "$bin" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -1 || true)
echo "== highest GLIBC_ symbol version needed: ${needed:-none (static)}"
if [ -n "$needed" ] && [ "$(printf '%s\n%s\n' "$needed" "$max_glibc" | sort -V | tail -1)" != "$max_glibc" ]; then
  echo "build-layer: $bin needs GLIBC_$needed, newer than $max_glibc (Amazon Linux 2023)." >&2
  echo "build-layer: these symbols are the cause:" >&2
  objdump -T "$bin" | grep -E "GLIBC_$(printf '%s' "$needed" | sed 's/\./\\./g')\b" | awk '{print "  " $NF}' >&2 || true
  exit 1
fi

size=$(stat -c %s "$bin")
echo "== binary size: $size bytes ($(awk "BEGIN{printf \"%.1f\", $size/1048576}") MiB, stripped: $(file -b "$bin" | grep -o 'not stripped\|stripped' | head -1))"
if [ "$size" -gt "$max_bytes" ]; then
  echo "build-layer: the binary is over 20 MiB" >&2
  exit 1
fi

out=target/lambda
stage="$out/layer"
rm -rf "$stage" "$out/sealtrail-layer.zip"
mkdir -p "$stage/extensions" "$stage/sealtrail"
install -m 0755 "$bin" "$stage/extensions/sealtrail"
install -m 0644 "$config" "$stage/sealtrail/config.toml"
(cd "$stage" && zip -q -X -r ../sealtrail-layer.zip extensions sealtrail)
echo "== $out/sealtrail-layer.zip: $(stat -c %s "$out/sealtrail-layer.zip") bytes"
unzip -l "$out/sealtrail-layer.zip" | sed -n '4,5p'
echo "Publish: aws lambda publish-layer-version --layer-name sealtrail --zip-file fileb://$out/sealtrail-layer.zip --compatible-architectures x86_64"
