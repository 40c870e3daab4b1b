"""Parses a Prometheus text exposition (standard input) with the official client's parser and
prints every sample as JSON lines: {"family", "type", "name", "labels", "value"}.

Used by tests/api.rs: the parser rejects malformed names, labels, escapes and values, so a
successful parse is the check that `GET /metrics` speaks the format.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        print(json.dumps({"family": family.name, "type": family.type, "name": s.name,
                          "labels": s.labels, "value": s.value}, sort_keys=True))
