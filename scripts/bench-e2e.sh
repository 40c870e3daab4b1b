#!/usr/bin/env bash
# End-to-end throughput and peak memory of `sealtrail run` (stdin → sealed) against a plain
# single-threaded ArrowWriter + zstd(1) writing the same lines, in the same run. Then a
# selective query over the segments written, with bytes read and decrypted versus total.
# Then the spans case: `examples/spangen` sends TRACES traces over OTLP/HTTP to
# `sealtrail run` (otlp → redact → sealed), and one trace is queried by `--trace-id`.
#
#   scripts/bench-e2e.sh [SIZE] [CONFIG] [TRACES]
#       SIZE: loggen size (default 1G)
#       CONFIG: default config/sealed.toml (no redaction); config/default.toml is
#               stdin → redact → sealed
#       TRACES: traces for the spans case (default 100000, about 750k spans; 0 skips it)
#   RUNS=N repeats the log comparison N times (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1G}
CONFIG=${2:-config/sealed.toml}
TRACES=${3:-100000}
RUNS=${RUNS:-1}
WORK=${BENCH_DIR:-$(pwd)/target/bench-e2e}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
rm -rf "$WORK"; mkdir -p "$WORK"
cargo build --release --quiet --bin sealtrail --example loggen --example plain_parquet --example spangen
BIN=$CARGO_TARGET_DIR/release
"$BIN/examples/loggen" --bytes "$SIZE" --seed 7 > "$WORK/lines.txt"
BYTES=$(stat -c %s "$WORK/lines.txt")
MIB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1048576 }')
cat "$WORK/lines.txt" > /dev/null   # warm the page cache for both runs

measure() { # name, command...: prints "name seconds maxrss_kib cpu_seconds"
  local name=$1; shift
  /usr/bin/time -v -o "$WORK/$name.time" "$@" < "$WORK/lines.txt" > /dev/null 2> "$WORK/$name.err"
  local secs rss cpu
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$WORK/$name.time")
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/$name.time")
  cpu=$(awk -F': ' '/(User|System) time/ { c += $2 } END { print c }' "$WORK/$name.time")
  echo "$name $secs $rss $cpu"
}

echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "input: $MIB MiB of loggen lines ($SIZE, seed 7); config: $CONFIG"
for run in $(seq "$RUNS"); do
  rm -rf "$WORK/data"
  B=$(measure baseline "$BIN/examples/plain_parquet" "$WORK/plain.parquet")
  S=$(SEALTRAIL_KEYS="$WORK/keys" SEALTRAIL_LOG=warn measure sealed "$BIN/sealtrail" run --config "$CONFIG" --data-dir "$WORK/data" --keys "$WORK/keys")
  [ "$RUNS" -gt 1 ] && echo "run $run (load average $(cut -d' ' -f1 /proc/loadavg))"
  for r in "$B" "$S"; do
    set -- $r
    # cores used: CPU time (user + system) over wall time.
    awk -v n="$1" -v s="$2" -v k="$3" -v c="$4" -v m="$MIB" 'BEGIN { printf "%-9s %7.2f s  %8.1f MiB/s  peak RSS %6.1f MiB  CPU %6.2f s (%.2f cores)\n", n, s, m / s, k / 1024, c, c / s }'
  done
  set -- $B; BS=$2; set -- $S; SS=$2
  awk -v b="$BS" -v s="$SS" 'BEGIN { printf "ratio sealed/baseline throughput: %.2fx\n", b / s }'
done
echo "plain parquet: $(stat -c %s "$WORK/plain.parquet") bytes; sealed: $(du -sb "$WORK/data" | cut -f1) bytes in $(find "$WORK/data" -name '*.parquet' | wc -l) segments"

# A selective query: one trace id (stdin lines carry none in the trace_id column, so every row
# group is pruned by its null count), and a grep that matches a few lines.
"$BIN/sealtrail" query "$WORK/data" --keys "$WORK/keys" --trace-id 4bf92f3577b34da6a3ce929d0e0e4736 --stats --format jsonl 2>&1 >/dev/null | tail -1
"$BIN/sealtrail" query "$WORK/data" --keys "$WORK/keys" --since 1h --grep 'timeout after 30000ms' --stats --format jsonl 2>&1 >/dev/null | tail -1

[ "$TRACES" -gt 0 ] || exit 0
# The spans case: OTLP/HTTP → redact → sealed, then one trace by id.
PORT=${SPANS_PORT:-43187}
cat > "$WORK/spans.toml" <<EOF
[sources.otel]
type = "otlp"
grpc_address = "127.0.0.1:0"
http_address = "127.0.0.1:$PORT"
[transforms.scrub]
type = "redact"
inputs = ["otel"]
[sinks.vault]
type = "sealed"
inputs = ["scrub"]
path = "$WORK/spans"
EOF
SEALTRAIL_LOG=warn "$BIN/sealtrail" run --config "$WORK/spans.toml" --keys "$WORK/keys" 2> "$WORK/spans-agent.err" &
AGENT=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
read -r TID NSPANS < <("$BIN/examples/spangen" --traces "$TRACES" --url "127.0.0.1:$PORT" 2> "$WORK/spangen.err")
kill -TERM "$AGENT"
wait "$AGENT" || { cat "$WORK/spans-agent.err"; exit 1; }
echo "spans: $(sed 's/^spangen: //' "$WORK/spangen.err"); $(du -sb "$WORK/spans" | cut -f1) bytes in $(find "$WORK/spans" -name '*.parquet' | wc -l) segments"
GOT=$("$BIN/sealtrail" query "$WORK/spans" --keys "$WORK/keys" --signal spans --trace-id "$TID" --stats --format jsonl 2> "$WORK/spans-query.err" | wc -l)
echo "query --trace-id $TID: $GOT of its $NSPANS spans; $(tail -1 "$WORK/spans-query.err" | sed 's/^sealtrail: //')"
