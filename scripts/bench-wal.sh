#!/usr/bin/env bash
# The write-ahead log's cost and replay speed (issue 15), release build, one script run:
#  1. stdin → sealed (config/sealed.toml) with the log off and on, alternating, same input:
#     wall time, MiB/s, peak RSS, and the ratio; fsyncs/s from the `wal_fsyncs` counter.
#  2. replay: a run that logs the whole input without sealing (segment limits out of reach)
#     is killed with SIGKILL once the log stops growing; the next start replays it, and its
#     log line gives bytes of log and seconds: replay MiB/s.
#
#   scripts/bench-wal.sh [SIZE] [RUNS]     SIZE: loggen size (default 256M), RUNS (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-256M}
RUNS=${2:-2}
WORK=${BENCH_DIR:-$(pwd)/target/bench-wal}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
rm -rf "$WORK"; mkdir -p "$WORK"
cargo build --release --quiet --bin sealtrail --example loggen
BIN=$CARGO_TARGET_DIR/release
"$BIN/examples/loggen" --bytes "$SIZE" --seed 7 > "$WORK/lines.txt"
BYTES=$(stat -c %s "$WORK/lines.txt")
MIB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1048576 }')
cat "$WORK/lines.txt" > /dev/null   # warm the page cache

cp config/sealed.toml "$WORK/off.toml"
{ cat config/sealed.toml; echo "wal = true"; } > "$WORK/on.toml"

measure() { # name config: prints "name seconds maxrss_kib fsyncs"
  local name=$1 config=$2
  rm -rf "$WORK/data"
  SEALTRAIL_LOG=info /usr/bin/time -v -o "$WORK/$name.time" "$BIN/sealtrail" run --config "$config" \
    --data-dir "$WORK/data" --keys "$WORK/keys" < "$WORK/lines.txt" > /dev/null 2> "$WORK/$name.err"
  local secs rss fsyncs
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$WORK/$name.time")
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/$name.time")
  fsyncs=$(grep -o 'wal_fsyncs=[0-9]*' "$WORK/$name.err" | tail -1 | cut -d= -f2)
  echo "$name $secs $rss ${fsyncs:-0}"
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "input: $MIB MiB of loggen lines ($SIZE, seed 7); stdin → sealed (config/sealed.toml)"
for run in $(seq "$RUNS"); do
  OFF=$(measure off "$WORK/off.toml")
  ON=$(measure on "$WORK/on.toml")
  for r in "$OFF" "$ON"; do
    set -- $r
    awk -v n="log $1" -v s="$2" -v k="$3" -v f="$4" -v m="$MIB" 'BEGIN { printf "run '"$run"' %-8s %7.2f s  %7.1f MiB/s  peak RSS %6.1f MiB  fsyncs %d (%.0f/s)\n", n, s, m / s, k / 1024, f, f / s }'
  done
  set -- $OFF; S_OFF=$2; set -- $ON; S_ON=$2
  awk -v a="$S_OFF" -v b="$S_ON" 'BEGIN { printf "run '"$run"' log on / log off throughput: %.2fx (cost %.0f%%)\n", a / b, (b - a) / b * 100 }'
done

# Replay: log everything, seal nothing, SIGKILL, replay.
{ cat config/sealed.toml; printf 'wal = true\nmax_rows = 1000000000\nmax_bytes = 100000000000\nmax_age = "1h"\nwal_max_bytes = 100000000000\n'; } \
  | sed 's/^max_age = "5m"$//' > "$WORK/replay.toml"
rm -rf "$WORK/data"
mkfifo "$WORK/fifo"
SEALTRAIL_LOG=warn "$BIN/sealtrail" run --config "$WORK/replay.toml" --data-dir "$WORK/data" --keys "$WORK/keys" \
  < "$WORK/fifo" > /dev/null 2> "$WORK/replay-1.err" &
AGENT=$!
exec 3> "$WORK/fifo"
cat "$WORK/lines.txt" >&3
prev=-1
while :; do
  sleep 1
  now=$(du -sb "$WORK/data/.wal" | cut -f1)
  [ "$now" = "$prev" ] && break
  prev=$now
done
kill -9 "$AGENT"; wait "$AGENT" 2>/dev/null || true
exec 3>&-
echo "log left by SIGKILL: $(ls "$WORK/data/.wal" | wc -l) files, $(du -sb "$WORK/data/.wal" | cut -f1) bytes"
SEALTRAIL_LOG=info /usr/bin/time -v -o "$WORK/replay.time" "$BIN/sealtrail" run --config "$WORK/replay.toml" \
  --data-dir "$WORK/data" --keys "$WORK/keys" < /dev/null > /dev/null 2> "$WORK/replay-2.err"
line=$(grep 'write-ahead log replayed' "$WORK/replay-2.err" | tail -1)
echo "replay: $line"
bytes=$(echo "$line" | grep -o 'bytes=[0-9]*' | cut -d= -f2)
secs=$(echo "$line" | grep -o 'seconds=[0-9.]*' | cut -d= -f2)
awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "replay: %.1f MiB of log in %.2f s = %.1f MiB/s (replay, build and seal segments)\n", b / 1048576, s, b / 1048576 / s }'
echo "replay run peak RSS: $(awk -F': ' '/Maximum resident set size/ { printf "%.1f MiB", $2 / 1024 }' "$WORK/replay.time")"
