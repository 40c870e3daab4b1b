#!/usr/bin/env bash
# Issue 19: records/s of `sealtrail query DIR --format jsonl|csv > /dev/null`, an old binary
# against a new one over the same sealed data in the same run, with `zstd -dc | grep -c` over
# the same text as the floor; then checks that both binaries print the same bytes.
#
#   scripts/bench-query.sh OLD_BINARY NEW_BINARY [SIZE]
#       OLD_BINARY: e.g. built from main: git -C /work/main archive HEAD | tar -x -C /tmp/old
#                   && (cd /tmp/old && cargo build --release) && cp target/release/sealtrail …
#       NEW_BINARY: this tree's target/release/sealtrail
#       SIZE: loggen size (default 200M, about 1.3 M lines: two segments at the default limits)
#   RUNS=N repeats each timing N times (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 SIZE=${3:-200M} RUNS=${RUNS:-3}
WORK=${BENCH_DIR:-$(pwd)/target/bench-query}
mkdir -p "$WORK"
export SEALTRAIL_KEYS="$WORK/keys"
if [ ! -d "$WORK/data" ]; then
  cargo run --quiet --release --example loggen -- --bytes "$SIZE" --seed 1 > "$WORK/lines.txt"
  SEALTRAIL_DATA_DIR="$WORK/data" "$NEW" run --config config/sealed.toml < "$WORK/lines.txt"
  zstd -q -1 -f "$WORK/lines.txt" -o "$WORK/lines.zst"
fi
records=$(wc -l < "$WORK/lines.txt")
echo "records: $records; segments: $(find "$WORK/data" -name '*.parquet' | wc -l); bytes: $(du -sb "$WORK/data" | cut -f1)"
wall() { local s e; s=$(date +%s.%N); sh -c "$1" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
for _ in $(seq "$RUNS"); do
  for case in "zstd|grep:zstd -dc $WORK/lines.zst | grep -c NOMATCH || true" \
              "old jsonl:$OLD query $WORK/data --format jsonl" "new jsonl:$NEW query $WORK/data --format jsonl" \
              "old csv:$OLD query $WORK/data --format csv" "new csv:$NEW query $WORK/data --format csv" \
              "new jsonl, one core:taskset -c 0 $NEW query $WORK/data --format jsonl"; do
    t=$(wall "${case#*:}")
    printf '%-20s %6.2f s  %8.0f records/s\n' "${case%%:*}" "$t" "$(echo "$records / $t" | bc -l)"
  done
done
for f in jsonl csv; do
  a=$("$OLD" query "$WORK/data" --format $f | sha256sum) b=$("$NEW" query "$WORK/data" --format $f | sha256sum)
  [ "$a" = "$b" ] && echo "$f: same bytes" || { echo "$f: OUTPUT DIFFERS"; exit 1; }
done
