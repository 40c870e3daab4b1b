#!/usr/bin/env bash
# The goal comparisons of issue 17, same run, interleaved so that the load of a shared machine
# falls on every command alike, on three corpora:
#   loggen   examples/loggen lines (about 150 B, the mix of BENCHMARKS.md)
#   json     JSON-per-line application logs (about 300 B, ids, 1% secrets; bench-corpus.py)
#   long     lines of 4–64 KiB (loggen lines joined; bench-corpus.py)
# For each corpus, the median wall time, CPU and peak RSS of
#   filter      `sealtrail redact` (the engine as a Unix filter)
#   r-black     `sealtrail run`: stdin → redact → blackhole
#   plain       examples/plain_parquet: single-thread ArrowWriter + zstd(1), one body column
#   r-sealed    `sealtrail run`: stdin → redact → sealed (the embedded default pipeline)
# and the two ratios (goals: r-black/filter ≥ 0.8, r-sealed/plain ≥ 1.0, RSS ≤ 64 MiB).
#
#   scripts/bench-pipeline.sh [SIZE_MIB] [CORPORA]
#       SIZE_MIB: size of each corpus (default 128); CORPORA default "loggen json long"
#   RUNS=N interleaved rounds (default 3). BIN=path to use another sealtrail binary.
#   BENCH_DIR=DIR for the corpora and output (default target/bench-pipeline).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-128}
CORPORA=${2:-loggen json long}
RUNS=${RUNS:-3}
WORK=${BENCH_DIR:-$(pwd)/target/bench-pipeline}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
# Corpora are deterministic (size, seed) and kept between runs under their size.
mkdir -p "$WORK"; rm -rf "$WORK/data" "$WORK/keys" "$WORK"/*.m "$WORK"/*.summary
# NO_BUILD=1 uses the release binaries already built (for example while tests hold the target dir).
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin sealtrail --example loggen --example plain_parquet
REL=$CARGO_TARGET_DIR/release
ST=${BIN:-$REL/sealtrail}
BYTES=$((SIZE << 20))
for c in $CORPORA; do
  f=$WORK/$c-${SIZE}M.txt
  [ -s "$f" ] && continue
  case $c in
    loggen) "$REL/examples/loggen" --bytes "$BYTES" --seed 7 > "$f.tmp" ;;
    json) python3 scripts/bench-corpus.py json "$BYTES" 7 > "$f.tmp" ;;
    long) "$REL/examples/loggen" --bytes "$((BYTES + BYTES / 8))" --seed 8 |
            python3 scripts/bench-corpus.py long "$BYTES" 8 > "$f.tmp" ;;
    *) echo "unknown corpus $c" >&2; exit 2 ;;
  esac
  mv "$f.tmp" "$f"
done
printf '[sources.stdin]\ntype = "stdin"\n[transforms.redact]\ntype = "redact"\ninputs = ["stdin"]\n[sinks.out]\ntype = "blackhole"\ninputs = ["redact"]\n' > "$WORK/r-black.toml"
printf '[sources.stdin]\ntype = "stdin"\n[transforms.redact]\ntype = "redact"\ninputs = ["stdin"]\n[sinks.out]\ntype = "sealed"\ninputs = ["redact"]\npath = "%s/data"\n' "$WORK" > "$WORK/r-sealed.toml"

measure() { # input, name: prints "seconds maxrss_kib cpu_seconds"
  local in=$1 name=$2
  rm -rf "$WORK/data" "$WORK/plain.parquet"
  case $name in
    filter) set -- "$ST" redact ;;
    plain) set -- "$REL/examples/plain_parquet" "$WORK/plain.parquet" ;;
    *) set -- "$ST" run --config "$WORK/$name.toml" --keys "$WORK/keys" ;;
  esac
  SEALTRAIL_LOG=warn /usr/bin/time -v -o "$WORK/time" "$@" < "$in" > /dev/null 2> "$WORK/err" ||
    { cat "$WORK/err" >&2; exit 1; }
  awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i] }
              /Maximum resident set size/ { r = $2 } /(User|System) time/ { c += $2 }
              END { print s, r, c }' "$WORK/time"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $RUNS interleaved rounds; sealtrail = $ST"
for c in $CORPORA; do
  in=$WORK/$c-${SIZE}M.txt
  MIB=$(awk -v b="$(stat -c %s "$in")" 'BEGIN { printf "%.1f", b / 1048576 }')
  LINES=$(wc -l < "$in")
  cat "$in" > /dev/null   # warm the page cache
  NAMES="filter r-black plain r-sealed"
  for n in $NAMES; do : > "$WORK/$n.m"; done
  for _ in $(seq "$RUNS"); do
    for n in $NAMES; do measure "$in" "$n" >> "$WORK/$n.m"; done
  done
  echo "corpus $c: $MIB MiB, $LINES lines"
  for n in $NAMES; do
    w=$(cut -d' ' -f1 "$WORK/$n.m" | median); r=$(cut -d' ' -f2 "$WORK/$n.m" | median); u=$(cut -d' ' -f3 "$WORK/$n.m" | median)
    echo "$n $w $r $u" >> "$WORK/$c.summary"
    awk -v n="$n" -v w="$w" -v r="$r" -v u="$u" -v m="$MIB" 'BEGIN {
      printf "  %-9s %6.2f s %7.1f MiB/s  CPU %6.2f s (%.2f cores)  peak RSS %5.1f MiB\n", n, w, m / w, u, u / w, r / 1024 }'
  done
  # Wall-time ratios are the goals; CPU ratios say the same without the machine's other load
  # (and without the disk: write BENCH_DIR to a tmpfs such as /dev/shm on a shared machine,
  # where another job's writes can stall the fsyncs of the sealed sink for seconds).
  awk '{ w[$1] = $2; u[$1] = $4 } END {
    printf "  throughput ratios: r-black/filter %.2fx (goal >= 0.8), r-sealed/plain %.2fx (goal >= 1.0)\n", w["filter"] / w["r-black"], w["plain"] / w["r-sealed"]
    printf "  CPU ratios:        r-black/filter %.2fx, r-sealed/plain %.2fx\n", u["filter"] / u["r-black"], u["plain"] / u["r-sealed"] }' "$WORK/$c.summary"
done
