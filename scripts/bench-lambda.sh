#!/usr/bin/env bash
# The Lambda figures of BENCHMARKS.md: start → registered and subscribed, SHUTDOWN → exit
# with 10,000 buffered records, peak RSS over 1,000 invokes (/usr/bin/time -v), binary size.
#
# Measures the layer's binary (built by scripts/build-layer.sh unless SEALTRAIL_BENCH_BIN
# names one) against the in-repo emulator, through tests/lambda_bench.rs.
#   scripts/bench-lambda.sh                      # lambda_telemetry → blackhole
#   SEALTRAIL_BENCH_CONFIG=default scripts/bench-lambda.sh   # the embedded default (sealing)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
[ -x /usr/bin/time ] || { echo "bench-lambda: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
if [ -z "${SEALTRAIL_BENCH_BIN:-}" ]; then
  scripts/build-layer.sh
  SEALTRAIL_BENCH_BIN="$PWD/target/lambda/layer/extensions/sealtrail"
fi
export SEALTRAIL_BENCH_BIN
cargo test --locked --test lambda_bench -- --ignored --nocapture --test-threads 1 2>&1 \
  | grep -vE '^(running|test |$)|test result'
