//! Server-side filters of a tail stream: what a client asked for in the query string of
//! `GET /v1/tail` (`grep`, `level`, `service`, `signal`, `trace_id`), parsed once per client
//! and applied to every event before it is encoded for that client.
//!
//! The conditions and their meaning are [`crate::filter`]'s, shared with the `filter`
//! transform and `sealtrail query`. The query string comes from the network, so parsing is
//! strict: unknown or repeated parameters (but `service`, which may repeat) and bad values are
//! errors that name the parameter, and the `grep` pattern has a compiled-size limit.

pub use crate::filter::{Filter, FilterError};

/// Parses a URL query string (`grep=timeout&level=warn`, percent-encoded).
///
/// # Errors
/// A [`FilterError`] naming the first bad parameter; sent back to the client as the body of
/// a 400 response.
pub fn from_query(query: &str) -> Result<Filter, FilterError> {
    Filter::from_query(query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, LogRecord, Span, severity};
    use crate::filter::Field;

    fn log(body: &str, sev: i32, service: &str) -> Event {
        Event::Log(LogRecord {
            body: body.into(),
            severity_number: sev,
            service: service.into(),
            ..LogRecord::default()
        })
    }

    fn span(name: &str, status: i32, trace: u8) -> Event {
        Event::Span(Span { name: name.into(), status_code: status, trace_id: [trace; 16], ..Span::default() })
    }

    #[test]
    fn empty_query_passes_everything() {
        let f = from_query("").unwrap();
        assert!(f.is_pass_all());
        assert!(f.matches(&log("x", 0, "")));
        assert!(f.matches(&span("x", 0, 1)));
    }

    #[test]
    fn grep_matches_bodies_and_span_names() {
        let f = from_query("grep=time%5C%2Bout|fail").unwrap();
        assert!(f.matches(&log("request time+out", 9, "a")));
        assert!(f.matches(&span("payment fail", 0, 1)));
        assert!(!f.matches(&log("all good", 9, "a")));
    }

    #[test]
    fn level_is_a_minimum_and_unknown_severity_counts_as_info() {
        let f = from_query("level=WARN").unwrap();
        assert!(!f.matches(&log("a", severity::INFO, "")));
        assert!(f.matches(&log("a", severity::WARN, "")));
        assert!(f.matches(&log("a", severity::FATAL, "")));
        assert!(!f.matches(&log("a", 0, "")));
        assert!(from_query("level=info").unwrap().matches(&log("a", 0, "")));
        assert!(!f.matches(&span("ok", 1, 1)));
        assert!(f.matches(&span("bad", 2, 1)));
    }

    #[test]
    fn service_signal_and_trace_id() {
        let f = from_query("service=checkout&signal=logs").unwrap();
        assert!(f.matches(&log("a", 0, "checkout")));
        assert!(!f.matches(&log("a", 0, "checkout-2")));
        assert!(from_query("service=checkout-*").unwrap().matches(&log("a", 0, "checkout-2")));
        assert!(!f.matches(&span("a", 0, 1)));
        let f = from_query(&format!("trace_id={}", hex::encode([7u8; 16]))).unwrap();
        assert!(f.matches(&span("a", 0, 7)));
        assert!(!f.matches(&span("a", 0, 8)));
        assert!(!f.matches(&log("no trace", 0, "")));
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        let cases = [
            ("token=abc", FilterError::Unknown("token".into())),
            ("level=info&level=warn", FilterError::Repeated(Field::Level)),
        ];
        for (q, want) in cases {
            assert_eq!(from_query(q).unwrap_err(), want, "{q}");
        }
        for (q, field) in [
            ("level=loud", Field::Level),
            ("signal=metrics", Field::Signal),
            ("trace_id=xyz", Field::TraceId),
            ("service=%5B", Field::Service),
            ("grep=(unclosed", Field::Grep),
            // A pattern whose compiled program exceeds the limit is refused, not compiled.
            ("grep=%5Cw%7B1000%7D%7B1000%7D", Field::Grep),
        ] {
            let e = from_query(q).unwrap_err();
            assert!(matches!(&e, FilterError::Value { field: f, .. } if *f == field), "{q}: {e}");
            assert!(e.to_string().starts_with(&format!("`{}`", field.name())), "{e}");
        }
        // `service` may repeat: any of the globs.
        let f = from_query("service=a&service=b-*").unwrap();
        assert!(
            f.matches(&log("x", 0, "b-2")) && f.matches(&log("x", 0, "a")) && !f.matches(&log("x", 0, "c"))
        );
    }
}
