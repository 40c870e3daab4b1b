#!/usr/bin/env bash
# End-to-end throughput and peak memory of `sealtrail run` (stdin → sealed) against a plain
# single-threaded ArrowWriter + zstd(1) writing the same lines, in the same run. Then a
# selective query over the segments written, with bytes read and decrypted versus total.
#
#   scripts/bench-e2e.sh [SIZE] [CONFIG]      SIZE: loggen size (default 1G)
#                                             CONFIG: default config/sealed.toml (no redaction);
#                                             config/default.toml is stdin → redact → sealed
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1G}
CONFIG=${2:-config/sealed.toml}
WORK=${BENCH_DIR:-$(pwd)/target/bench-e2e}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
rm -rf "$WORK"; mkdir -p "$WORK"
cargo build --release --quiet --bin sealtrail --example loggen --example plain_parquet
BIN=$CARGO_TARGET_DIR/release
"$BIN/examples/loggen" --bytes "$SIZE" --seed 7 > "$WORK/lines.txt"
BYTES=$(stat -c %s "$WORK/lines.txt")
MIB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1048576 }')
cat "$WORK/lines.txt" > /dev/null   # warm the page cache for both runs

measure() { # name, command...: prints "name seconds maxrss_kib"
  local name=$1; shift
  /usr/bin/time -v -o "$WORK/$name.time" "$@" < "$WORK/lines.txt" > /dev/null 2> "$WORK/$name.err"
  local secs rss
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$WORK/$name.time")
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/$name.time")
  echo "$name $secs $rss"
}

echo "input: $MIB MiB of loggen lines ($SIZE, seed 7); config: $CONFIG"
B=$(measure baseline "$BIN/examples/plain_parquet" "$WORK/plain.parquet")
S=$(SEALTRAIL_KEYS="$WORK/keys" SEALTRAIL_LOG=warn measure sealed "$BIN/sealtrail" run --config "$CONFIG" --data-dir "$WORK/data" --keys "$WORK/keys")
for r in "$B" "$S"; do
  set -- $r
  awk -v n="$1" -v s="$2" -v k="$3" -v m="$MIB" 'BEGIN { printf "%-9s %7.2f s  %8.1f MiB/s  peak RSS %6.1f MiB\n", n, s, m / s, k / 1024 }'
done
set -- $B; BS=$2; set -- $S; SS=$2
awk -v b="$BS" -v s="$SS" 'BEGIN { printf "ratio sealed/baseline throughput: %.2fx\n", b / s }'
echo "plain parquet: $(stat -c %s "$WORK/plain.parquet") bytes; sealed: $(du -sb "$WORK/data" | cut -f1) bytes in $(find "$WORK/data" -name '*.parquet' | wc -l) segments"

# A selective query: one trace id (stdin lines carry none in the trace_id column, so every row
# group is pruned by its null count), and a grep that matches a few lines.
"$BIN/sealtrail" query "$WORK/data" --keys "$WORK/keys" --trace-id 4bf92f3577b34da6a3ce929d0e0e4736 --stats --format jsonl 2>&1 >/dev/null | tail -1
"$BIN/sealtrail" query "$WORK/data" --keys "$WORK/keys" --since 1h --grep 'timeout after 30000ms' --stats --format jsonl 2>&1 >/dev/null | tail -1
