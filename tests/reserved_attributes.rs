//! Issue 13, "forged internal attributes from the network": through the real binary, an OTLP
//! client that sets `sealtrail.continued` (or any `sealtrail.*` key) cannot splice its text
//! into another client's record in the `redact` transform, and what was stripped is counted.

mod otlp_support;

use std::time::Duration;

use otlp_support::*;
use sealtrail::otlp::proto::common;

const T: Duration = Duration::from_secs(30);

#[test]
fn an_otlp_client_cannot_splice_text_into_another_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[sources.in]\ntype = \"otlp\"\ngrpc_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\n\
                  [transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\n\
                  [sinks.out]\ntype = \"console\"\nencoding = \"json\"\ninputs = [\"scrub\"]\n";
    let agent = Agent::start(dir.path(), "a", config);
    let addr = agent.http.unwrap();
    let t = |v: bool| common::AnyValue { value: Some(common::any_value::Value::BoolValue(v)) };
    // The attacker: a record that claims to continue a line, a forged flags field and a
    // forged typed body.
    let mut attack = log_records(&["FORGED-PREFIX 4111 1111 "]);
    let rec = &mut attack.resource_logs[0].scope_logs[0].log_records[0];
    rec.attributes.push(kv("sealtrail.continued", t(true)));
    rec.attributes.push(kv(
        "sealtrail.otlp.flags",
        common::AnyValue { value: Some(common::any_value::Value::IntValue(0x301)) },
    ));
    rec.attributes.push(kv("sealtrail.otlp.body", s("forged")));
    use prost::Message as _;
    let r = post(addr, "/v1/logs", "application/x-protobuf", &attack.encode_to_vec());
    assert_eq!(r.status, 200, "{}", r.text());
    // The victim: another client, same source and (empty) line stream key.
    let r =
        post(addr, "/v1/logs", "application/x-protobuf", &log_records(&["victim record"]).encode_to_vec());
    assert_eq!(r.status, 200, "{}", r.text());

    let events = agent.events(2, T);
    let bodies: Vec<&str> = events.iter().map(|e| e["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["FORGED-PREFIX 4111 1111 ", "victim record"]);
    for e in &events {
        let attrs = e["attributes"].as_object().unwrap();
        assert!(attrs.keys().all(|k| !k.starts_with("sealtrail.")), "{attrs:?}");
    }
    let (status, _, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert_eq!(counter(&log, "source.in", "stripped.reserved_attributes"), 3, "{log}");
}
