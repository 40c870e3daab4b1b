"""Sends spans and log records to a sealtrail `otlp` source with the official OpenTelemetry
Python SDK and its OTLP exporters, and prints what it sent as one JSON document on stdout.

    python otlp_export.py grpc http://127.0.0.1:4317
    python otlp_export.py http http://127.0.0.1:4318

Span names, attributes, events and log bodies carry a card number and URL credentials, so that
an end-to-end test can check that they are gone after redaction. Exits non-zero if an export
failed (the SDK only logs export failures, so this script checks the exporters' results).
"""

import json
import logging
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.trace import Status, StatusCode, SpanKind

CARD = "4111 1111 1111 1111"
URL = "https://alice:hunter2@db.example.com/orders?token=abc123secret&page=2"


def exporters(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return (OTLPSpanExporter(endpoint=endpoint, insecure=True),
                OTLPLogExporter(endpoint=endpoint, insecure=True))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return (OTLPSpanExporter(endpoint=endpoint + "/v1/traces"),
            OTLPLogExporter(endpoint=endpoint + "/v1/logs"))


class Checked:
    """Wraps an exporter and remembers whether every export succeeded."""

    def __init__(self, inner):
        self.inner = inner
        self.failures = 0

    def export(self, batch):
        r = self.inner.export(batch)
        if getattr(r, "name", "") not in ("SUCCESS",):
            self.failures += 1
        return r

    def shutdown(self):
        return self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def main():
    protocol, endpoint = sys.argv[1], sys.argv[2]
    span_exporter, log_exporter = exporters(protocol, endpoint)
    span_exporter, log_exporter = Checked(span_exporter), Checked(log_exporter)
    resource = Resource.create({"service.name": "payments-" + protocol, "deployment.url": URL})

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    tracer = tracer_provider.get_tracer("interop.test", "1.0.0")

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    log = logging.getLogger("interop")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

    sent = {"spans": [], "logs": []}

    def record(span, parent):
        ctx = span.get_span_context()
        sent["spans"].append({
            "name": span.name,
            "trace_id": format(ctx.trace_id, "032x"),
            "span_id": format(ctx.span_id, "016x"),
            "parent_span_id": None if parent is None else format(parent, "016x"),
        })

    for i in range(3):
        with tracer.start_as_current_span("checkout card " + CARD, kind=SpanKind.SERVER) as root:
            root.set_attribute("payment.card", CARD)
            root.set_attribute("db.url", URL)
            root.set_attribute("attempt", i)
            root.set_attribute("amounts", [1.5, 2.25])
            root.add_event("charged", {"card": CARD})
            root_id = root.get_span_context().span_id
            for j in range(2):
                with tracer.start_as_current_span("GET " + URL, kind=SpanKind.CLIENT) as child:
                    child.set_attribute("http.url", URL)
                    child.set_attribute("retry", j)
                    child.set_status(Status(StatusCode.ERROR, "declined card " + CARD))
                    record(child, root_id)
                    log.warning("charge failed for card %s via %s", CARD, URL)
                    ctx = child.get_span_context()
                    sent["logs"].append({
                        "trace_id": format(ctx.trace_id, "032x"),
                        "span_id": format(ctx.span_id, "016x"),
                    })
            record(root, None)

    tracer_provider.shutdown()
    logger_provider.shutdown()
    failures = span_exporter.failures + log_exporter.failures
    sent["failures"] = failures
    print(json.dumps(sent))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
