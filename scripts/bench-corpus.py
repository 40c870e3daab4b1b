#!/usr/bin/env python3
"""Deterministic benchmark corpora for scripts/bench-pipeline.sh (standard library only).

  bench-corpus.py json BYTES SEED > app.jsonl      JSON-per-line application logs (~250 B)
  bench-corpus.py long BYTES SEED < lines > long.txt
      long lines of 4-64 KiB: the loggen lines on standard input joined with " | "

About 1% of the JSON lines carry a secret (a test card number, URL credentials or an IBAN),
as in application logs where most lines have nothing to redact.
"""
import json
import random
import sys
import uuid

CARDS = ["4111111111111111", "5555555555554444", "378282246310005", "4012888888881881"]
MSGS = [
    "request completed", "cache miss", "retrying upstream call", "order created",
    "payment authorized", "user session refreshed", "slow query", "timeout after 30000ms",
]
PATHS = ["/api/v1/orders/{}", "/api/v1/users/{}/cart", "/healthz", "/api/v2/payments/{}/capture"]
SERVICES = ["checkout", "payments", "cart", "gateway", "inventory"]


def json_lines(total, seed):
    rng = random.Random(seed)
    out = sys.stdout
    written = 0
    t = 1_764_000_000_000
    buf = []
    while written < total:
        t += rng.randint(0, 40)
        rec = {
            "ts": t,
            "level": rng.choice(["info", "info", "info", "debug", "warn", "error"]),
            "service": rng.choice(SERVICES),
            "trace_id": "%032x" % rng.getrandbits(128),
            "span_id": "%016x" % rng.getrandbits(64),
            "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": rng.randint(1, 10_000_000),
            "path": rng.choice(PATHS).format(rng.randint(1, 999_999)),
            "status": rng.choice([200, 200, 200, 201, 404, 500]),
            "latency_ms": round(rng.random() * 250, 3),
            "msg": rng.choice(MSGS),
        }
        r = rng.random()
        if r < 0.005:
            rec["card"] = rng.choice(CARDS)
        elif r < 0.008:
            rec["callback"] = "https://svc:hunter%d@hooks.example.com/cb" % rng.randint(0, 999)
        elif r < 0.01:
            rec["note"] = "refund to GB82WEST12345698765432"
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        buf.append(line)
        written += len(line)
        if len(buf) >= 4096:
            out.write("".join(buf))
            buf.clear()
    out.write("".join(buf))


def long_lines(total, seed):
    rng = random.Random(seed)
    out = sys.stdout
    written = 0
    target = rng.randint(4096, 65536)
    parts, size = [], 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        parts.append(line)
        size += len(line) + 3
        if size >= target:
            text = " | ".join(parts) + "\n"
            out.write(text)
            written += len(text)
            if written >= total:
                return
            parts, size = [], 0
            target = rng.randint(4096, 65536)
    if parts:
        out.write(" | ".join(parts) + "\n")


def main():
    kind, total, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if kind == "json":
        json_lines(total, seed)
    elif kind == "long":
        long_lines(total, seed)
    else:
        sys.exit("bench-corpus.py: unknown corpus %r (json or long)" % kind)


if __name__ == "__main__":
    main()
