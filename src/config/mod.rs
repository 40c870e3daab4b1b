//! Configuration: Vector-style TOML files with `[sources.X]`, `[transforms.X]`, `[sinks.X]`,
//! wired by `inputs`, plus the global `data_dir`, `[keys]` and `[telemetry]`.
//!
//! Loading goes in four steps, each collecting every error it finds:
//! 1. parse each file as TOML (syntax errors carry their line);
//! 2. interpolate `${VAR}` in every string ([`interpolate`]);
//! 3. split each component table into the fields the topology owns (`type`, `inputs`,
//!    `allow_unredacted`) and the rest, which the component kind parses with
//!    `deny_unknown_fields` (the kinds come in as a [`Kinds`] list: the loader never imports
//!    a source, transform or sink);
//! 4. check the graph ([`graph`]): unknown inputs, cycles, signal mismatches, unused
//!    components and sinks that are not downstream of redaction.
//!
//! Several files merge into one configuration; a component id defined twice is an error.

mod error;
pub mod graph;
mod interpolate;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use crate::component::{
    BuildContext, GlobalOptions, KeyRule, KeysOptions, Kinds, SinkConfig, SinkKind, SourceConfig, SourceKind,
    TransformConfig, TransformKind, default_keys_dir,
};
pub use error::{ConfigError, ConfigErrors, Origin};
pub use interpolate::interpolate;

/// The embedded default configuration (`config/default.toml`), used by `sealtrail run` when no
/// `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

/// The name under which the embedded default appears in messages.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default>";

/// A component as loaded: the fields the topology owns, and the component's own config.
#[derive(Debug)]
pub struct ComponentDef<C: ?Sized> {
    pub id: String,
    /// The `type` name.
    pub kind: String,
    pub inputs: Vec<String>,
    /// Sinks only: accept input that has not been through a `redact` transform.
    pub allow_unredacted: bool,
    pub origin: Origin,
    pub config: Box<C>,
}

/// A loaded, checked configuration.
#[derive(Debug, Default)]
pub struct Config {
    pub globals: GlobalOptions,
    pub sources: Vec<ComponentDef<dyn SourceConfig>>,
    pub transforms: Vec<ComponentDef<dyn TransformConfig>>,
    pub sinks: Vec<ComponentDef<dyn SinkConfig>>,
}

/// Overrides from the command line and environment, applied after the files.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub keys_dir: Option<PathBuf>,
}

/// One configuration text with the name it is reported under.
pub struct Source<'a> {
    pub name: String,
    pub text: &'a str,
}

/// Loads configuration files (or the embedded default when `paths` is empty), merges them and
/// checks the graph.
pub fn load_files(kinds: &Kinds, paths: &[PathBuf], overrides: &Overrides) -> Result<Config, ConfigErrors> {
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match std::fs::read_to_string(p) {
            Ok(t) => texts.push((p.display().to_string(), t)),
            Err(e) => errors.push(
                ConfigError::new(format!("cannot read configuration file: {e}"))
                    .at(Origin { file: p.display().to_string(), line: 0 }),
            ),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    if texts.is_empty() {
        texts.push((DEFAULT_CONFIG_NAME.to_owned(), DEFAULT_CONFIG.to_owned()));
    }
    let sources: Vec<Source<'_>> =
        texts.iter().map(|(name, text)| Source { name: name.clone(), text }).collect();
    load(kinds, &sources, overrides, &|name| std::env::var(name).ok())
}

/// Loads configuration texts: the core of [`load_files`], with the environment passed in so
/// tests control it.
pub fn load(
    kinds: &Kinds,
    files: &[Source<'_>],
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut config = Config::default();
    let mut data_dir: Option<(PathBuf, String)> = None;
    let mut keys: Option<(KeysOptions, String)> = None;
    let mut telemetry: Option<(crate::telemetry::TelemetryOptions, String)> = None;
    let mut seen: BTreeMap<String, Origin> = BTreeMap::new();

    for file in files {
        let table: toml::Table = match file.text.parse() {
            Ok(t) => t,
            Err(e) => {
                let line = e.span().map(|s| line_of(file.text, s.start)).unwrap_or(0);
                errors.push(
                    ConfigError::new(format!("invalid TOML: {}", e.message()))
                        .at(Origin { file: file.name.clone(), line }),
                );
                continue;
            }
        };
        let at = |line: usize| Origin { file: file.name.clone(), line };
        for (key, mut value) in table {
            let section_line = find_section_line(file.text, &key, None);
            if let Err(e) = interpolate_value(&mut value, env) {
                errors.push(ConfigError::new(e).at(at(section_line)).component(key.clone()));
                continue;
            }
            match key.as_str() {
                "data_dir" => match value {
                    toml::Value::String(s) => {
                        if let Some((_, other)) = &data_dir {
                            errors.push(ConfigError::new(format!("`data_dir` is already set in {other}")).at(at(section_line)));
                        }
                        data_dir = Some((PathBuf::from(s), file.name.clone()));
                    }
                    _ => errors.push(ConfigError::new("`data_dir` must be a string").at(at(section_line))),
                },
                "keys" => match value.try_into::<KeysOptions>() {
                    Ok(k) => {
                        if let Some((_, other)) = &keys {
                            errors.push(ConfigError::new(format!("`[keys]` is already set in {other}")).at(at(section_line)));
                        }
                        for rule in &k.rules {
                            if let Err(e) = glob::Pattern::new(&rule.pattern) {
                                errors.push(ConfigError::new(format!("invalid glob `{}` in keys.rules: {e}", rule.pattern)).at(at(section_line)));
                            }
                        }
                        keys = Some((k, file.name.clone()));
                    }
                    Err(e) => errors.push(ConfigError::new(e.message().to_owned()).at(at(section_line)).component("keys")),
                },
                "telemetry" => {
                    let field_line = |f: &str| find_field_line(file.text, section_line, f);
                    match value.try_into::<crate::telemetry::TelemetryOptions>() {
                        Ok(t) => {
                            if let Some((_, other)) = &telemetry {
                                errors.push(ConfigError::new(format!("`[telemetry]` is already set in {other}")).at(at(section_line)));
                            }
                            if let Err(es) = t.check() {
                                for e in es {
                                    errors.push(ConfigError::new(e.message).at(at(field_line(e.field))).component("telemetry"));
                                }
                            }
                            telemetry = Some((t, file.name.clone()));
                        }
                        Err(e) => {
                            let msg = e.message().to_owned();
                            let line = field_in_message(&msg).map(field_line).unwrap_or(section_line);
                            errors.push(ConfigError::new(msg).at(at(line)).component("telemetry"));
                        }
                    }
                }
                "sources" | "transforms" | "sinks" => {
                    let toml::Value::Table(components) = value else {
                        errors.push(ConfigError::new(format!("`{key}` must be a table")).at(at(section_line)));
                        continue;
                    };
                    for (id, body) in components {
                        let origin = at(find_section_line(file.text, &key, Some(&id)));
                        let name = format!("{key}.{id}");
                        if let Some(prev) = seen.get(&id) {
                            errors.push(ConfigError::new(format!("component id `{id}` is already defined at {prev}")).at(origin).component(name));
                            continue;
                        }
                        seen.insert(id.clone(), origin.clone());
                        match parse_component(kinds, &key, &id, body, origin.clone(), file.text) {
                            Ok(Parsed::Source(d)) => config.sources.push(d),
                            Ok(Parsed::Transform(d)) => config.transforms.push(d),
                            Ok(Parsed::Sink(d)) => config.sinks.push(d),
                            Err(e) => errors.push(e.component(name)),
                        }
                    }
                }
                other => errors.push(
                    ConfigError::new(format!(
                        "unknown field `{other}`, expected one of `data_dir`, `keys`, `telemetry`, `sources`, `transforms`, `sinks`"
                    ))
                    .at(at(section_line)),
                ),
            }
        }
    }

    if let Some((d, _)) = data_dir {
        config.globals.data_dir = d;
    }
    if let Some((k, _)) = keys {
        config.globals.keys = k;
    }
    if let Some((t, _)) = telemetry {
        config.globals.telemetry = t;
    }
    if let Some(d) = &overrides.data_dir {
        config.globals.data_dir = d.clone();
    }
    if let Some(k) = &overrides.keys_dir {
        config.globals.keys.dir = Some(k.clone());
    }

    if errors.is_empty() {
        errors.extend(graph::check(&config));
    }
    if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
}

enum Parsed {
    Source(ComponentDef<dyn SourceConfig>),
    Transform(ComponentDef<dyn TransformConfig>),
    Sink(ComponentDef<dyn SinkConfig>),
}

fn parse_component(
    kinds: &Kinds,
    section: &str,
    id: &str,
    body: toml::Value,
    origin: Origin,
    text: &str,
) -> Result<Parsed, ConfigError> {
    let err = |m: String| ConfigError::new(m).at(origin.clone());
    let toml::Value::Table(mut table) = body else {
        return Err(err("a component must be a table".into()));
    };
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(err(format!("invalid component id `{id}`: use letters, digits, `_` and `-`")));
    }
    let kind = match table.remove("type") {
        Some(toml::Value::String(s)) => s,
        Some(_) => return Err(err("`type` must be a string".into())),
        None => return Err(err("missing field `type`".into())),
    };
    let inputs = match table.remove("inputs") {
        None => None,
        Some(toml::Value::Array(a)) => {
            let mut v = Vec::with_capacity(a.len());
            for x in a {
                match x {
                    toml::Value::String(s) => v.push(s),
                    _ => return Err(err("`inputs` must be a list of component ids".into())),
                }
            }
            Some(v)
        }
        Some(_) => return Err(err("`inputs` must be a list of component ids".into())),
    };
    let allow_unredacted = if section == "sinks" {
        match table.remove("allow_unredacted") {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(_) => return Err(err("`allow_unredacted` must be true or false".into())),
        }
    } else {
        false
    };
    let rest = toml::Value::Table(table);
    // A field error from serde names the field; point at the line that sets it when we can.
    let field_err = |e: toml::de::Error| {
        let msg = e.message().to_owned();
        let line =
            field_in_message(&msg).map(|f| find_field_line(text, origin.line, f)).unwrap_or(origin.line);
        ConfigError::new(msg).at(Origin { file: origin.file.clone(), line })
    };
    let def = |inputs: Vec<String>| (id.to_owned(), kind.clone(), inputs);
    match section {
        "sources" => {
            if inputs.is_some() {
                return Err(err("a source takes no `inputs`".into()));
            }
            let k =
                kinds.sources.iter().find(|k| k.name == kind).ok_or_else(|| {
                    err(unknown_type("source", &kind, kinds.sources.iter().map(|k| k.name)))
                })?;
            let config = (k.parse)(rest).map_err(field_err)?;
            let (id, kind, inputs) = def(Vec::new());
            Ok(Parsed::Source(ComponentDef { id, kind, inputs, allow_unredacted, origin, config }))
        }
        "transforms" => {
            let k = kinds.transforms.iter().find(|k| k.name == kind).ok_or_else(|| {
                err(unknown_type("transform", &kind, kinds.transforms.iter().map(|k| k.name)))
            })?;
            let inputs = inputs
                .filter(|i| !i.is_empty())
                .ok_or_else(|| err("missing `inputs`: a transform needs at least one input".into()))?;
            let config = (k.parse)(rest).map_err(field_err)?;
            let (id, kind, inputs) = def(inputs);
            Ok(Parsed::Transform(ComponentDef { id, kind, inputs, allow_unredacted, origin, config }))
        }
        _ => {
            let k = kinds
                .sinks
                .iter()
                .find(|k| k.name == kind)
                .ok_or_else(|| err(unknown_type("sink", &kind, kinds.sinks.iter().map(|k| k.name))))?;
            let inputs = inputs
                .filter(|i| !i.is_empty())
                .ok_or_else(|| err("missing `inputs`: a sink needs at least one input".into()))?;
            let config = (k.parse)(rest).map_err(field_err)?;
            let (id, kind, inputs) = def(inputs);
            Ok(Parsed::Sink(ComponentDef { id, kind, inputs, allow_unredacted, origin, config }))
        }
    }
}

fn unknown_type<'a>(what: &str, kind: &str, known: impl Iterator<Item = &'a str>) -> String {
    let known: Vec<_> = known.map(|k| format!("`{k}`")).collect();
    format!("unknown {what} type `{kind}`, expected one of {}", known.join(", "))
}

/// Interpolates `${VAR}` in every string of a TOML value (also used by `sealtrail redact`).
pub(crate) fn interpolate_value(
    v: &mut toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match v {
        toml::Value::String(s) => {
            *s = interpolate(s, env)?;
            Ok(())
        }
        toml::Value::Array(a) => a.iter_mut().try_for_each(|x| interpolate_value(x, env)),
        toml::Value::Table(t) => t.iter_mut().try_for_each(|(_, x)| interpolate_value(x, env)),
        _ => Ok(()),
    }
}

/// The 1-based line of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    memchr::memchr_iter(b'\n', &text.as_bytes()[..pos.min(text.len())]).count() + 1
}

/// The line that opens a section: `[sources.app]` (or `[sources."app"]`, `sources.app.x = …`,
/// `app = {` inside `[sources]`) when `id` is given, else the first line that mentions `key`
/// at the top of a line. 0 when not found.
fn find_section_line(text: &str, key: &str, id: Option<&str>) -> usize {
    let mut in_section = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let compact: String =
            line.chars().filter(|c| !c.is_whitespace() && *c != '"' && *c != '\'').collect();
        match id {
            None => {
                if compact.starts_with(&format!("[{key}"))
                    || compact.starts_with(&format!("{key}="))
                    || compact.starts_with(&format!("{key}."))
                {
                    return n + 1;
                }
            }
            Some(id) => {
                if compact.starts_with(&format!("[{key}.{id}]"))
                    || compact.starts_with(&format!("{key}.{id}."))
                    || compact.starts_with(&format!("{key}.{id}="))
                {
                    return n + 1;
                }
                if compact.starts_with('[') {
                    in_section = compact == format!("[{key}]");
                } else if in_section
                    && (compact.starts_with(&format!("{id}=")) || compact.starts_with(&format!("{id}.")))
                {
                    return n + 1;
                }
            }
        }
    }
    0
}

/// The line of `field = …` in the section that starts at `section_line`, else `section_line`.
fn find_field_line(text: &str, section_line: usize, field: &str) -> usize {
    if section_line == 0 {
        return 0;
    }
    for (n, raw) in text.lines().enumerate().skip(section_line) {
        let line = raw.trim_start();
        if line.starts_with('[') {
            break;
        }
        if let Some(rest) = line.strip_prefix(field) {
            if rest.trim_start().starts_with('=') || rest.starts_with('.') {
                return n + 1;
            }
        }
    }
    section_line
}

/// The field a serde message is about: "unknown field `x`, …", "invalid type: … for key `x`".
fn field_in_message(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let end = msg[start..].find('`')? + start;
    Some(&msg[start..end])
}
