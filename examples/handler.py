"""A stand-in for a function handler: logs to stdout and stderr, then exits with a code.

Used by config/sidecar.toml and the integration tests of the `exec` source.
"""
import os
import signal
import sys
import time

code = int(os.environ.get("HANDLER_EXIT_CODE", "3"))
lines = int(os.environ.get("HANDLER_LINES", "3"))


def on_term(signum, frame):
    print(f"handler got signal {signum}", flush=True)
    sys.exit(143)


signal.signal(signal.SIGTERM, on_term)
for i in range(lines):
    print(f"processing order {i} for card 4111 1111 1111 1111", flush=True)
    print(f"warning: slow downstream call {i}", file=sys.stderr, flush=True)
if os.environ.get("HANDLER_WAIT"):
    print("waiting for a signal", flush=True)
    time.sleep(60)
sys.exit(code)
