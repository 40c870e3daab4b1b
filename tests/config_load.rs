//! Loader tests: every error names the file, the line and the component.

use std::path::PathBuf;

use sealtrail::components::KINDS;
use sealtrail::config::{
    Config, ConfigErrors, DEFAULT_CONFIG, DEFAULT_CONFIG_NAME, Origin, Overrides, Source, load,
};

fn env(name: &str) -> Option<String> {
    match name {
        "DATA" => Some("/srv/data".into()),
        _ => None,
    }
}

fn load_one(text: &str) -> Result<Config, ConfigErrors> {
    load(&KINDS, &[Source { name: "t.toml".into(), text }], &Overrides::default(), &env)
}

fn errors(text: &str) -> Vec<String> {
    match load_one(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const GOOD: &str = r#"
data_dir = "${DATA}/x"

[sources.app]
type = "stdin"

[sinks.out]
type = "console"
inputs = ["app"]
allow_unredacted = true
"#;

#[test]
fn loads_a_good_config() {
    let c = load_one(GOOD).unwrap();
    assert_eq!(c.globals.data_dir, PathBuf::from("/srv/data/x"));
    assert_eq!(c.sources.len(), 1);
    assert_eq!(c.sinks[0].inputs, vec!["app".to_string()]);
    assert_eq!(c.sinks[0].origin, Origin { file: "t.toml".into(), line: 7, column: 8 });
}

#[test]
fn overrides_win() {
    let o = Overrides { data_dir: Some("/o".into()), keys_dir: Some("/k".into()) };
    let c = load(&KINDS, &[Source { name: "t".into(), text: GOOD }], &o, &env).unwrap();
    assert_eq!(c.globals.data_dir, PathBuf::from("/o"));
    assert_eq!(c.globals.keys_dir(), PathBuf::from("/k"));
}

#[test]
fn syntax_error_has_line() {
    let e = errors("[sources.app]\ntype = \"stdin\"\nbroken = = 1\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.toml:3:10: invalid TOML"), "{e:?}");
}

#[test]
fn unknown_type_names_component_and_known_types() {
    let e = errors(
        "[sources.app]\ntype = \"stdn\"\n\n[sinks.out]\ntype = \"console\"\ninputs = [\"app\"]\nallow_unredacted = true\n",
    );
    assert!(
        e[0].starts_with("t.toml:1:10: sources.app: unknown source type `stdn`, expected one of"),
        "{e:?}"
    );
    assert!(e[0].contains("`stdin`"));
}

#[test]
fn unknown_field_points_at_its_line() {
    let text = "[sources.app]\ntype = \"stdin\"\nmax_line_byte = 5\n\n[sinks.out]\ntype = \"console\"\ninputs = [\"app\"]\nallow_unredacted = true\n";
    let e = errors(text);
    assert!(e[0].starts_with("t.toml:3:1: sources.app: unknown field `max_line_byte`"), "{e:?}");
}

#[test]
fn graph_errors() {
    let cases: &[(&str, &str)] = &[
        // Unknown input, with a suggestion.
        (
            "[sources.app]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"ap\"]\nallow_unredacted = true\n",
            "t.toml:3:8: sinks.out: unknown input `ap` (did you mean `app`?)",
        ),
        // Sink without inputs.
        (
            "[sources.app]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\n",
            "t.toml:3:8: sinks.out: missing `inputs`: a sink needs at least one input",
        ),
        // Unused source.
        (
            "[sources.app]\ntype = \"stdin\"\n[sources.other]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"app\"]\nallow_unredacted = true\n",
            "t.toml:3:10: sources.other: not used: no transform or sink lists it in `inputs`",
        ),
        // A sink that is not downstream of redaction.
        (
            "[sources.app]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"app\"]\n",
            "t.toml:3:8: sinks.out: input `app` is not downstream of a `redact` transform",
        ),
        // A source with inputs.
        (
            "[sources.app]\ntype = \"stdin\"\ninputs = [\"x\"]\n",
            "t.toml:1:10: sources.app: a source takes no `inputs`",
        ),
        // Input is a sink.
        (
            "[sources.app]\ntype = \"stdin\"\n[sinks.a]\ntype = \"console\"\ninputs = [\"app\"]\nallow_unredacted = true\n[sinks.b]\ntype = \"console\"\ninputs = [\"a\"]\nallow_unredacted = true\n",
            "t.toml:7:8: sinks.b: input `a` is a sink; sinks have no output",
        ),
        // Missing environment variable.
        (
            "[sources.app]\ntype = \"stdin\"\nservice = \"${NOPE}\"\n",
            "t.toml:3:11: sources: environment variable `NOPE` is not set",
        ),
        // Unknown top-level field.
        ("colour = 1\n", "t.toml:1:1: unknown field `colour`"),
    ];
    for (text, want) in cases {
        let e = errors(text);
        assert!(e.iter().any(|e| e.starts_with(want)), "want {want:?}, got {e:?}");
    }
}

#[test]
fn duplicate_ids_across_files() {
    let a = "[sources.app]\ntype = \"stdin\"\n";
    let b = "[sinks.out]\ntype = \"console\"\ninputs = [\"app\"]\nallow_unredacted = true\n[sources.app]\ntype = \"stdin\"\n";
    let e = load(
        &KINDS,
        &[Source { name: "a.toml".into(), text: a }, Source { name: "b.toml".into(), text: b }],
        &Overrides::default(),
        &env,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("b.toml:5:10: sources.app: component id `app` is already defined at a.toml:1:10"),
        "{e}"
    );
}

#[test]
fn merged_files_form_one_graph() {
    let a = "[sources.app]\ntype = \"stdin\"\n";
    let b = "[sinks.out]\ntype = \"console\"\ninputs = [\"app\"]\nallow_unredacted = true\n";
    let c = load(
        &KINDS,
        &[Source { name: "a".into(), text: a }, Source { name: "b".into(), text: b }],
        &Overrides::default(),
        &env,
    )
    .unwrap();
    assert_eq!((c.sources.len(), c.sinks.len()), (1, 1));
}

#[test]
fn embedded_default_loads() {
    load(
        &KINDS,
        &[Source { name: DEFAULT_CONFIG_NAME.into(), text: DEFAULT_CONFIG }],
        &Overrides::default(),
        &env,
    )
    .unwrap();
}

#[test]
fn cycles_are_errors() {
    let text = "[sources.app]\ntype = \"stdin\"\n[transforms.a]\ntype = \"filter\"\ninputs = [\"app\", \"b\"]\n[transforms.b]\ntype = \"filter\"\ninputs = [\"a\"]\n[sinks.out]\ntype = \"console\"\ninputs = [\"b\"]\nallow_unredacted = true\n";
    let e = errors(text);
    assert!(e[0].starts_with("t.toml:3:13: transforms.a: cycle between a, b"), "{e:?}");
}

#[test]
fn signal_mismatch_is_an_error() {
    let text = "[sources.app]\ntype = \"stdin\"\n[transforms.spans]\ntype = \"filter\"\nsignal = \"spans\"\ninputs = [\"app\"]\n[sinks.out]\ntype = \"console\"\ninputs = [\"spans\"]\nallow_unredacted = true\n";
    let e = errors(text);
    assert!(
        e.iter()
            .any(|e| e
                .starts_with("t.toml:7:8: sinks.out: accepts logs and spans but its inputs emit nothing")),
        "{e:?}"
    );
}

#[test]
fn telemetry_section_loads_and_its_errors_point_at_the_field() {
    let ok = format!(
        "{GOOD}\n[telemetry]\nenabled = true\nendpoint = \"http://c:4318\"\nheaders = {{ k = \"${{DATA}}\" }}\n"
    );
    let c = load_one(&ok).unwrap();
    assert!(c.globals.telemetry.enabled);
    assert_eq!(c.globals.telemetry.headers.0["k"], "/srv/data", "interpolated");
    assert!(!load_one(GOOD).unwrap().globals.telemetry.enabled, "off by default");

    let e = errors(&format!("{GOOD}\n[telemetry]\nenabled = true\ntimeout = \"5x\"\n"));
    // GOOD ends on line 10 and a blank line follows: `[telemetry]` is line 12.
    assert_eq!(
        e,
        [
            "t.toml:14:1: telemetry: `timeout` = \"5x\" is not a duration such as \"500ms\", \"10s\" or \"1m\"",
            "t.toml:13:1: telemetry: `endpoint` is required when `enabled = true` (e.g. \"http://127.0.0.1:4318\")",
        ]
    );
    let e = errors(&format!("{GOOD}\n[telemetry]\nenable = true\n"));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.toml:13:1: telemetry: unknown field `enable`"), "{e:?}");
}

#[test]
fn telemetry_set_in_two_files_is_an_error() {
    let a = "[telemetry]\nenabled = false\n";
    let files = [
        Source { name: "a.toml".into(), text: GOOD },
        Source { name: "b.toml".into(), text: a },
        Source { name: "c.toml".into(), text: a },
    ];
    let e = load(&KINDS, &files, &Overrides::default(), &env).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].to_string(), "c.toml:1:2: `[telemetry]` is already set in b.toml");
}
