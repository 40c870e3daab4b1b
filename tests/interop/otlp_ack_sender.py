"""Sends spans (OTLP/gRPC) and log records (OTLP/HTTP) to a sealtrail `otlp` source with the
official OpenTelemetry Python SDK, one export per item, until it is killed; prints a line
for every item whose export the agent answered with success:

    python otlp_ack_sender.py http://127.0.0.1:4317 http://127.0.0.1:4318

    span <n>
    log <n>

Every line is flushed as soon as the exporter returns SUCCESS, so a test that kills the
agent knows exactly what the SDK saw accepted. The exporters retry on their own while the
agent is down (connection refused, UNAVAILABLE, 503), as they do in production.
"""

import logging
import sys

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

CANARY = "CANARY-ack-5e21b7"


class Reporting:
    """Wraps an exporter and prints the ids of the items of every successful export."""

    def __init__(self, inner, kind, ids):
        self.inner, self.kind, self.ids = inner, kind, ids

    def export(self, batch):
        r = self.inner.export(batch)
        if getattr(r, "name", "") == "SUCCESS":
            for item in batch:
                print(self.kind, self.ids(item), flush=True)
        return r

    def shutdown(self):
        return self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def main():
    grpc_endpoint, http_endpoint = sys.argv[1], sys.argv[2]
    resource = Resource.create({"service.name": "acked"})
    spans = Reporting(OTLPSpanExporter(endpoint=grpc_endpoint, insecure=True, timeout=20), "span",
                      lambda s: s.name.split(" ")[1])
    logs = Reporting(OTLPLogExporter(endpoint=http_endpoint + "/v1/logs", timeout=20), "log",
                     lambda r: r.log_record.body.split(" ")[1])

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = tracer_provider.get_tracer("ack.test")

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    log = logging.getLogger("ack")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

    n = 0
    while True:
        with tracer.start_as_current_span("span %d %s" % (n, CANARY)) as s:
            s.set_attribute("canary", CANARY)
        log.warning("log %d %s", n, CANARY)
        n += 1


if __name__ == "__main__":
    main()
