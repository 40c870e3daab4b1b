#!/usr/bin/env bash
# Issue 19, in one run over the same sealed data:
#  1. records/s of `sealtrail query DIR --format jsonl|csv > /dev/null` with the direct writers
#     against the reference encoders they replaced (`--reference-encoder`: a serde_json::Value
#     per event, a String per CSV cell), on all cores and on one (taskset), with
#     `zstd -dc | grep -c` over the same text as the floor; then a check that both print the
#     same bytes;
#  2. `--trace-id` over spans (examples/spangen → OTLP/HTTP → redact → sealed): bytes read and
#     decrypted, and wall time, with the trace-id index (NEW) and without it (OLD: a binary
#     that predates the index reads the same files as before it);
#  3. time to the first row of `--format table` on a terminal (under `script`, a pty).
#
#   scripts/bench-query.sh NEW_BINARY [OLD_BINARY] [SIZE]
#       NEW_BINARY: this tree's release build; its examples (loggen, spangen) are taken from
#                   the same target directory
#       OLD_BINARY: a build from before the index (optional: step 2 then shows NEW only)
#       SIZE: loggen size (default 200M, about 1.2 M records: two segments, as in the issue)
#   RUNS=N repeats each timing N times (default 3); TRACES=N spans case size (default 100000).
set -euo pipefail
cd "$(dirname "$0")/.."
NEW=$1 OLD=${2:-} SIZE=${3:-200M} RUNS=${RUNS:-3} TRACES=${TRACES:-100000}
EX=$(dirname "$NEW")/examples
WORK=${BENCH_DIR:-$(pwd)/target/bench-query}
mkdir -p "$WORK"
export SEALTRAIL_KEYS="$WORK/keys"
if [ ! -d "$WORK/data" ]; then
  "$EX/loggen" --bytes "$SIZE" --seed 1 > "$WORK/lines.txt"
  SEALTRAIL_DATA_DIR="$WORK/data" "$NEW" run < "$WORK/lines.txt"
  zstd -q -1 -f "$WORK/lines.txt" -o "$WORK/lines.zst"
fi
records=$("$NEW" query "$WORK/data" --format jsonl | wc -l)
echo "records: $records; segments: $(find "$WORK/data" -name '*.parquet' | wc -l); bytes: $(du -sb "$WORK/data" | cut -f1); cores: $(nproc)"
wall() { local s e; s=$(date +%s.%N); sh -c "$1" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
for _ in $(seq "$RUNS"); do
  for case in "zstd|grep:zstd -dc $WORK/lines.zst | grep -c NOMATCH || true" \
              "grep NOMATCH:$NEW query $WORK/data --grep NOMATCH" \
              "reference jsonl:$NEW query $WORK/data --format jsonl --reference-encoder" \
              "direct jsonl:$NEW query $WORK/data --format jsonl" \
              "reference csv:$NEW query $WORK/data --format csv --reference-encoder" \
              "direct csv:$NEW query $WORK/data --format csv" \
              "reference jsonl 1c:taskset -c 0 $NEW query $WORK/data --format jsonl --reference-encoder" \
              "direct jsonl 1c:taskset -c 0 $NEW query $WORK/data --format jsonl" \
              "reference csv 1c:taskset -c 0 $NEW query $WORK/data --format csv --reference-encoder" \
              "direct csv 1c:taskset -c 0 $NEW query $WORK/data --format csv"; do
    t=$(wall "${case#*:}")
    printf '%-20s %6.2f s  %9.0f records/s\n' "${case%%:*}" "$t" "$(echo "$records / $t" | bc -l)"
  done
done
for f in jsonl csv; do
  a=$("$NEW" query "$WORK/data" --format $f --reference-encoder | sha256sum) b=$("$NEW" query "$WORK/data" --format $f | sha256sum)
  [ "$a" = "$b" ] && echo "$f: same bytes" || { echo "$f: OUTPUT DIFFERS"; exit 1; }
done

# The first row of a table on a terminal: `script` gives the query a pty; the clock stops at
# the first byte that comes through.
first_row() {
  python3 - "$@" <<'EOF'
import os, pty, sys, time
t = time.monotonic()
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out = b""
while out.count(b"\n") < 2:  # the header and the first row
    chunk = os.read(fd, 65536)
    if not chunk:
        break
    out += chunk
print(f"{(time.monotonic() - t) * 1000:.0f} ms")
os.kill(pid, 9)
os.waitpid(pid, 0)
EOF
}
for _ in $(seq "$RUNS"); do
  echo "table, first row on a terminal: $(first_row "$NEW" query "$WORK/data" --format table)"
done

[ "$TRACES" -gt 0 ] || exit 0
if [ ! -d "$WORK/spans" ]; then
  PORT=${SPANS_PORT:-43197}
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
  SEALTRAIL_LOG=warn "$NEW" run --config "$WORK/spans.toml" 2> "$WORK/spans-agent.err" &
  AGENT=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  "$EX/spangen" --traces "$TRACES" --url "127.0.0.1:$PORT" > "$WORK/spangen.out" 2> "$WORK/spangen.err"
  kill -TERM "$AGENT"
  wait "$AGENT" || { cat "$WORK/spans-agent.err"; exit 1; }
fi
read -r TID NSPANS < "$WORK/spangen.out"
echo "spans: $(sed 's/^spangen: //' "$WORK/spangen.err"); $(du -sb "$WORK/spans" | cut -f1) bytes in $(find "$WORK/spans" -name '*.parquet' | wc -l) segments"
for _ in $(seq "$RUNS"); do
  for bin in ${OLD:+"$OLD"} "$NEW"; do
    s=$(date +%s.%N)
    GOT=$("$bin" query "$WORK/spans" --signal spans --trace-id "$TID" --stats --format jsonl 2> "$WORK/spans-query.err" | wc -l)
    e=$(date +%s.%N)
    printf '%s: %s of %s spans in %.3f s; %s\n' "$([ "$bin" = "$NEW" ] && echo new || echo old)" "$GOT" "$NSPANS" "$(echo "$e - $s" | bc)" "$(tail -1 "$WORK/spans-query.err" | sed 's/^sealtrail: //')"
  done
done
