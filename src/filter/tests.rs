use super::*;
use crate::event::{LogRecord, SpanEvent};

fn log(sev: i32, text: &str) -> Event {
    Event::Log(LogRecord { severity_number: sev, severity_text: text.into(), ..Default::default() })
}

#[test]
fn levels_of_events() {
    assert_eq!(level_of(&log(14, "")), 14);
    assert_eq!(level_of(&log(0, "Warning")), severity::WARN);
    assert_eq!(level_of(&log(0, "")), severity::INFO);
    assert_eq!(level_of(&log(0, "verbose")), severity::INFO);
    let span = |code| Event::Span(Span { status_code: code, ..Default::default() });
    assert_eq!(level_of(&span(2)), severity::ERROR);
    assert_eq!(level_of(&span(1)), severity::INFO);
    assert_eq!(level_of(&span(0)), severity::INFO);
}

#[test]
fn span_status_names() {
    for s in [SpanStatus::Unset, SpanStatus::Ok, SpanStatus::Error] {
        assert_eq!(SpanStatus::from_code(s.code()), s);
    }
    assert_eq!(SpanStatus::from_code(2).as_str(), "error");
    assert_eq!(SpanStatus::from_code(7), SpanStatus::Unset);
}

#[test]
fn time_range_is_inclusive_and_needs_a_time() {
    let f = Filter::default().with_time_range(Some(10), Some(20));
    let at = |t| Event::Log(LogRecord { time: t, ..Default::default() });
    assert!(f.matches(&at(10)) && f.matches(&at(20)));
    assert!(!f.matches(&at(9)) && !f.matches(&at(21)) && !f.matches(&at(0)));
    // A record without a producer time is placed at its observed time.
    assert!(f.matches(&Event::Log(LogRecord { observed_time: 15, ..Default::default() })));
    assert!(f.time_overlaps(Some(0), Some(10)) && !f.time_overlaps(Some(21), None));
}

#[test]
fn grep_sees_span_event_attributes_but_not_resource() {
    let f = FilterSpec { grep: Some("secret-ish".into()), ..Default::default() }.build().unwrap();
    let mut s = Span { resource: vec![KeyValue::new("host", "secret-ish")], ..Default::default() };
    assert!(!f.matches(&Event::Span(s.clone())));
    s.events.push(SpanEvent { attributes: vec![KeyValue::new("k", "secret-ish")], ..Default::default() });
    assert!(f.matches(&Event::Span(s)));
}

#[test]
fn errors_name_the_condition_for_each_surface() {
    let e = FilterSpec { trace_id: Some("x".into()), ..Default::default() }.build().unwrap_err();
    assert_eq!(e.to_string(), "`trace_id`: expected 32 hexadecimal digits");
    assert_eq!(e.for_flags(), "--trace-id: expected 32 hexadecimal digits");
    let long = "z".repeat(500);
    let e = FilterSpec { level: Some(long), ..Default::default() }.build().unwrap_err();
    assert!(e.to_string().len() < 200, "{e}");
    assert_eq!(FilterSpec::from_query("x=1").unwrap_err(), FilterError::Unknown("x".into()));
}
