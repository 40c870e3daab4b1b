#!/usr/bin/env bash
# Same-run A/B comparison of two sealtrail binaries (for example the previous commit's release
# build against this one's) on the end-to-end pipelines, interleaved A, B, A, B, … so that the
# load of a shared machine falls on both alike. Prints each pipeline's median wall time, CPU
# and peak RSS per binary and the throughput ratio B/A (above 1: B is faster).
#
#   scripts/bench-ab.sh A_BINARY B_BINARY [SIZE]
#       SIZE: loggen corpus size (default 256M), generated with B's build of examples/loggen
#   RUNS=N pairs per pipeline (default 5).
# Pipelines: stdin → blackhole, stdin → redact → blackhole, stdin → sealed,
# stdin → redact → sealed (the embedded default).
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1"); B=$(realpath "$2"); SIZE=${3:-256M}; RUNS=${RUNS:-5}
WORK=${BENCH_DIR:-$(pwd)/target/bench-ab}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
rm -rf "$WORK"; mkdir -p "$WORK"
cargo build --release --quiet --example loggen
"$CARGO_TARGET_DIR/release/examples/loggen" --bytes "$SIZE" --seed 7 > "$WORK/lines.txt"
MIB=$(awk -v b="$(stat -c %s "$WORK/lines.txt")" 'BEGIN { printf "%.1f", b / 1048576 }')
cat "$WORK/lines.txt" > /dev/null   # warm the page cache

write_config() { # name, redact (0/1), sink
  local f="$WORK/$1.toml"
  printf '[sources.stdin]\ntype = "stdin"\n' > "$f"
  local input=stdin
  if [ "$2" = 1 ]; then printf '[transforms.redact]\ntype = "redact"\ninputs = ["stdin"]\n' >> "$f"; input=redact; fi
  if [ "$3" = sealed ]; then
    printf '[sinks.out]\ntype = "sealed"\ninputs = ["%s"]\npath = "%s/data"\n' "$input" "$WORK" >> "$f"
  else
    printf '[sinks.out]\ntype = "blackhole"\ninputs = ["%s"]\n' "$input" >> "$f"
  fi
  # Without redact the sink must say it takes unredacted events on purpose.
  if [ "$2" = 0 ]; then printf 'allow_unredacted = true\n' >> "$f"; fi
}
write_config blackhole 0 blackhole
write_config redact-blackhole 1 blackhole
write_config sealed 0 sealed
write_config redact-sealed 1 sealed

measure() { # binary, config: prints "seconds maxrss_kib cpu_seconds"
  rm -rf "$WORK/data"
  SEALTRAIL_LOG=warn /usr/bin/time -v -o "$WORK/time" "$1" run --config "$2" --keys "$WORK/keys" \
    < "$WORK/lines.txt" > /dev/null 2> "$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i] }
              /Maximum resident set size/ { r = $2 } /(User|System) time/ { c += $2 }
              END { print s, r, c }' "$WORK/time"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); input $MIB MiB of loggen lines (seed 7); $RUNS interleaved pairs"
echo "A = $A"; echo "B = $B"
printf '%-18s %22s %22s %8s\n' pipeline "A: wall/CPU/RSS" "B: wall/CPU/RSS" "B/A"
for p in blackhole redact-blackhole sealed redact-sealed; do
  : > "$WORK/a"; : > "$WORK/b"
  for _ in $(seq "$RUNS"); do
    measure "$A" "$WORK/$p.toml" >> "$WORK/a"
    measure "$B" "$WORK/$p.toml" >> "$WORK/b"
  done
  aw=$(cut -d' ' -f1 "$WORK/a" | median); ac=$(cut -d' ' -f3 "$WORK/a" | median); ar=$(cut -d' ' -f2 "$WORK/a" | median)
  bw=$(cut -d' ' -f1 "$WORK/b" | median); bc=$(cut -d' ' -f3 "$WORK/b" | median); br=$(cut -d' ' -f2 "$WORK/b" | median)
  awk -v p="$p" -v aw="$aw" -v ac="$ac" -v ar="$ar" -v bw="$bw" -v bc="$bc" -v br="$br" -v m="$MIB" 'BEGIN {
    printf "%-18s %6.2fs %5.2fs %4.0fM %6.2fs %5.2fs %4.0fM %7.2fx   (%.0f vs %.0f MiB/s)\n",
      p, aw, ac, ar / 1024, bw, bc, br / 1024, aw / bw, m / aw, m / bw }'
done
