//! One duration type in every configuration field that takes a time (issue 11, "Config"):
//! `"5m"`, `"30s"`, `"250ms"` and plain seconds (`300`) all work, and the old `_secs` field
//! names still load.

use sealtrail::components::KINDS;
use sealtrail::config::{Overrides, Source, load};
use sealtrail::sinks::sealed::SealedConfig;
use sealtrail::sources::lambda_telemetry::LambdaTelemetryConfig;
use sealtrail::sources::otlp::OtlpSourceConfig;
use std::time::Duration;

#[test]
fn the_sealed_sink_max_age_takes_units_or_seconds() {
    let age = |v: &str| toml::from_str::<SealedConfig>(&format!("max_age = {v}")).map(|c| c.max_age.get());
    assert_eq!(age("\"5m\"").unwrap(), Duration::from_secs(300));
    assert_eq!(age("\"30s\"").unwrap(), Duration::from_secs(30));
    assert_eq!(age("300").unwrap(), Duration::from_secs(300));
    assert_eq!(age("\"250ms\"").unwrap(), Duration::from_millis(250));
    assert_eq!(toml::from_str::<SealedConfig>("").unwrap().max_age.get(), Duration::from_secs(300));
    assert!(age("\"soon\"").unwrap_err().message().contains("\"soon\" is not a duration"));
}

#[test]
fn old_secs_names_are_aliases_of_the_duration_fields() {
    let otlp = |t: &str| toml::from_str::<OtlpSourceConfig>(t).unwrap().retry_after.get();
    assert_eq!(otlp("retry_after_secs = 2"), Duration::from_secs(2));
    assert_eq!(otlp("retry_after = \"3s\""), Duration::from_secs(3));
    assert_eq!(otlp("retry_after = 4"), Duration::from_secs(4));
    assert_eq!(otlp(""), Duration::from_secs(1));

    let lambda = |t: &str| toml::from_str::<LambdaTelemetryConfig>(t).unwrap().flush_interval.get();
    assert_eq!(lambda("flush_interval_secs = 30"), Duration::from_secs(30));
    assert_eq!(lambda("flush_interval = \"5m\""), Duration::from_secs(300));
    assert_eq!(lambda(""), Duration::from_secs(60));
}

/// Through the loader: a bad duration is a configuration error that names the file, the line
/// of the field and the component.
#[test]
fn a_bad_duration_names_its_field_and_line() {
    let text = "[sources.app]\ntype = \"stdin\"\n[transforms.r]\ntype = \"redact\"\ninputs = [\"app\"]\n\
                [sinks.vault]\ntype = \"sealed\"\ninputs = [\"r\"]\nmax_age = 300\n";
    load(&KINDS, &[Source { name: "d.toml".into(), text }], &Overrides::default(), &|_| None).unwrap();
    let bad = text.replace("max_age = 300", "max_age = \"soon\"");
    let e = load(&KINDS, &[Source { name: "d.toml".into(), text: &bad }], &Overrides::default(), &|_| None)
        .unwrap_err();
    let msg = e.0[0].to_string();
    assert!(msg.starts_with("d.toml:9:11: sinks.vault: "), "{msg}");
    assert!(msg.contains("sinks.vault"), "{msg}");
    assert!(msg.contains("\"soon\" is not a duration"), "{msg}");
}

/// The file, generate and Lambda telemetry sources' `_ms` fields became durations (issue 11);
/// the old names keep their milliseconds, and setting both is an error that names both and
/// the component.
#[test]
fn old_ms_names_keep_their_unit_and_clash_with_the_new_ones() {
    let build = |source: &str| {
        let text = format!(
            "data_dir = \"state\"\n[sources.app]\n{source}\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"app\"]\nallow_unredacted = true\n"
        );
        let config =
            load(&KINDS, &[Source { name: "d.toml".into(), text: &text }], &Overrides::default(), &|_| None)
                .unwrap();
        sealtrail::topology::build(&config).map(|_| ()).map_err(|e| e.to_string())
    };
    let file = "type = \"file\"\ninclude = [\"/nonexistent/*.log\"]\nwait_for_files = true";
    build(&format!("{file}\npoll_interval = \"20ms\"\nrotate_wait = \"1s\"")).unwrap();
    build(&format!("{file}\npoll_interval_ms = 20\nrotate_wait_ms = 1000")).unwrap();
    let e = build(&format!("{file}\npoll_interval = \"20ms\"\npoll_interval_ms = 20")).unwrap_err();
    assert!(e.contains("sources.app") && e.contains("`poll_interval` and `poll_interval_ms`"), "{e}");
    let e = build(&format!("{file}\npoll_interval = \"0ms\"")).unwrap_err();
    assert!(e.contains("`poll_interval` must be at least 1ms"), "{e}");
    let e = build(&format!("{file}\nrotate_wait = 1\nrotate_wait_ms = 1")).unwrap_err();
    assert!(e.contains("`rotate_wait` and `rotate_wait_ms`"), "{e}");

    let generate = "type = \"generate\"\ncount = 1";
    build(&format!("{generate}\ninterval = \"5ms\"")).unwrap();
    build(&format!("{generate}\ninterval_ms = 5")).unwrap();
    let e = build(&format!("{generate}\ninterval = \"5ms\"\ninterval_ms = 5")).unwrap_err();
    assert!(e.contains("`interval` and `interval_ms`"), "{e}");
}
