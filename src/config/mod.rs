//! Configuration: Vector-style TOML files with `[sources.X]`, `[transforms.X]`, `[sinks.X]`,
//! wired by `inputs`, plus the global `data_dir`, `[keys]` and `[telemetry]`.
//!
//! Loading goes in four steps, each collecting every error it finds:
//! 1. parse each file as TOML keeping spans, so that every error (syntax, an unknown or
//!    invalid field, a failed check) points at its file, line and column;
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

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

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
    /// A digest of everything the file says about this component (type, inputs,
    /// `allow_unredacted` and every field after interpolation, spans and field order left out):
    /// equal digests mean an unchanged component when SIGHUP reloads the configuration. A hash,
    /// so no field value (a token) is kept twice.
    pub fingerprint: u64,
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
                    .at(Origin::file(p.display().to_string())),
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
    let mut api: Option<(crate::api::ApiOptions, String)> = None;
    let mut seen: BTreeMap<String, Origin> = BTreeMap::new();
    let mut secret_env = std::collections::BTreeSet::new();

    for file in files {
        // Parsed keeping spans, so that every error points at the exact line and column.
        let table = match DeTable::parse(file.text) {
            Ok(t) => t.into_inner(),
            Err(e) => {
                let origin = e.span().map_or_else(
                    || Origin::file(&file.name),
                    |s| Origin::at_offset(&file.name, file.text, s.start),
                );
                errors.push(ConfigError::new(format!("invalid TOML: {}", e.message().trim_end())).at(origin));
                continue;
            }
        };
        let at = |pos: usize| Origin::at_offset(&file.name, file.text, pos);
        // A deserialization error at the span it carries, else at `fallback`.
        let de_err = |e: toml::de::Error, fallback: &Origin| {
            let origin = e.span().map_or_else(|| fallback.clone(), |s| at(s.start));
            ConfigError::new(e.message().trim_end().to_owned()).at(origin)
        };
        for (key, mut value) in table {
            let key_at = at(key.span().start);
            let key = key.into_inner().into_owned();
            if let Err(e) = interpolate_de(&mut value, env, false, &mut secret_env) {
                errors.push(ConfigError::new(e.message).at(at(e.pos)).component(key.clone()));
                continue;
            }
            match key.as_str() {
                "data_dir" => match value.get_ref() {
                    DeValue::String(s) => {
                        if let Some((_, other)) = &data_dir {
                            errors.push(ConfigError::new(format!("`data_dir` is already set in {other}")).at(key_at.clone()));
                        }
                        data_dir = Some((PathBuf::from(s.as_ref()), file.name.clone()));
                    }
                    _ => errors.push(ConfigError::new("`data_dir` must be a string").at(at(value.span().start))),
                },
                "keys" => match KeysOptions::deserialize(ValueDeserializer::from(value)) {
                    Ok(k) => {
                        if let Some((_, other)) = &keys {
                            errors.push(ConfigError::new(format!("`[keys]` is already set in {other}")).at(key_at.clone()));
                        }
                        for rule in &k.rules {
                            if let Err(e) = glob::Pattern::new(&rule.pattern) {
                                errors.push(ConfigError::new(format!("invalid glob `{}` in keys.rules: {e}", rule.pattern)).at(key_at.clone()));
                            }
                        }
                        keys = Some((k, file.name.clone()));
                    }
                    Err(e) => errors.push(de_err(e, &key_at).component("keys")),
                },
                "telemetry" => {
                    // The position of each field, for the errors `check` reports by field name.
                    let fields: Vec<(String, usize)> = match value.get_ref() {
                        DeValue::Table(t) => t.iter().map(|(k, _)| (k.get_ref().to_string(), k.span().start)).collect(),
                        _ => Vec::new(),
                    };
                    let field_at = |f: &str| fields.iter().find(|(k, _)| k == f).map_or_else(|| key_at.clone(), |(_, p)| at(*p));
                    match crate::telemetry::TelemetryOptions::deserialize(ValueDeserializer::from(value)) {
                        Ok(t) => {
                            if let Some((_, other)) = &telemetry {
                                errors.push(ConfigError::new(format!("`[telemetry]` is already set in {other}")).at(key_at.clone()));
                            }
                            if let Err(es) = t.check() {
                                for e in es {
                                    errors.push(ConfigError::new(e.message).at(field_at(e.field)).component("telemetry"));
                                }
                            }
                            telemetry = Some((t, file.name.clone()));
                        }
                        Err(e) => errors.push(de_err(e, &key_at).component("telemetry")),
                    }
                }
                "api" => match crate::api::ApiOptions::deserialize(ValueDeserializer::from(value)) {
                    Ok(a) => {
                        if let Some((_, other)) = &api {
                            errors.push(ConfigError::new(format!("`[api]` is already set in {other}")).at(key_at.clone()));
                        }
                        if let Err(e) = a.compile() {
                            errors.push(ConfigError::new(format!("{e:#}")).at(key_at.clone()).component("api"));
                        }
                        api = Some((a, file.name.clone()));
                    }
                    Err(e) => errors.push(de_err(e, &key_at).component("api")),
                },
                "sources" | "transforms" | "sinks" => {
                    let DeValue::Table(components) = value.into_inner() else {
                        errors.push(ConfigError::new(format!("`{key}` must be a table")).at(key_at));
                        continue;
                    };
                    for (id, body) in components {
                        let origin = at(id.span().start);
                        let id = id.into_inner().into_owned();
                        let name = format!("{key}.{id}");
                        if let Some(prev) = seen.get(&id) {
                            errors.push(ConfigError::new(format!("component id `{id}` is already defined at {prev}")).at(origin).component(name));
                            continue;
                        }
                        seen.insert(id.clone(), origin.clone());
                        match parse_component(kinds, &key, &id, body, origin.clone(), &de_err) {
                            Ok(Parsed::Source(d)) => config.sources.push(d),
                            Ok(Parsed::Transform(d)) => config.transforms.push(d),
                            Ok(Parsed::Sink(d)) => config.sinks.push(d),
                            Err(e) => errors.push(e.component(name)),
                        }
                    }
                }
                other => errors.push(
                    ConfigError::new(format!(
                        "unknown field `{other}`, expected one of `data_dir`, `keys`, `telemetry`, `api`, `sources`, `transforms`, `sinks`"
                    ))
                    .at(key_at),
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
    config.globals.api = api.map(|(a, _)| a);
    config.globals.secret_env = secret_env;
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
    body: Spanned<DeValue<'_>>,
    origin: Origin,
    de_err: &dyn Fn(toml::de::Error, &Origin) -> ConfigError,
) -> Result<Parsed, ConfigError> {
    let err = |m: String| ConfigError::new(m).at(origin.clone());
    let span = body.span();
    let DeValue::Table(mut table) = body.into_inner() else {
        return Err(err("a component must be a table".into()));
    };
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(err(format!("invalid component id `{id}`: use letters, digits, `_` and `-`")));
    }
    let kind = match table.remove("type").map(Spanned::into_inner) {
        Some(DeValue::String(s)) => s.into_owned(),
        Some(_) => return Err(err("`type` must be a string".into())),
        None => return Err(err("missing field `type`".into())),
    };
    let inputs = match table.remove("inputs").map(Spanned::into_inner) {
        None => None,
        Some(DeValue::Array(a)) => {
            let mut v = Vec::with_capacity(a.len());
            for x in a.iter() {
                match x.get_ref() {
                    DeValue::String(s) => v.push(s.to_string()),
                    _ => return Err(err("`inputs` must be a list of component ids".into())),
                }
            }
            Some(v)
        }
        Some(_) => return Err(err("`inputs` must be a list of component ids".into())),
    };
    let allow_unredacted = if section == "sinks" {
        match table.remove("allow_unredacted").map(Spanned::into_inner) {
            None => false,
            Some(DeValue::Boolean(b)) => b,
            Some(_) => return Err(err("`allow_unredacted` must be true or false".into())),
        }
    } else {
        false
    };
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (section, &kind, &inputs, allow_unredacted).hash(&mut h);
        hash_table(&table, &mut h);
        h.finish()
    };
    // The rest goes to the kind's parser; its errors carry the span of the field they are about.
    let rest = ValueDeserializer::from(Spanned::new(span, DeValue::Table(table)));
    let field_err = |e: toml::de::Error| de_err(e, &origin);
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
            Ok(Parsed::Source(ComponentDef {
                id,
                kind,
                inputs,
                allow_unredacted,
                origin,
                config,
                fingerprint,
            }))
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
            Ok(Parsed::Transform(ComponentDef {
                id,
                kind,
                inputs,
                allow_unredacted,
                origin,
                config,
                fingerprint,
            }))
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
            Ok(Parsed::Sink(ComponentDef { id, kind, inputs, allow_unredacted, origin, config, fingerprint }))
        }
    }
}

/// Feeds a table to a hasher in key order, values by their text, spans left out.
fn hash_table(table: &DeTable<'_>, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    let mut keys: Vec<_> = table.iter().collect();
    keys.sort_by(|a, b| a.0.get_ref().cmp(b.0.get_ref()));
    for (k, v) in keys {
        k.get_ref().hash(h);
        hash_value(v.get_ref(), h);
    }
    0xffu8.hash(h);
}

fn hash_value(v: &DeValue<'_>, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    match v {
        DeValue::String(s) => (0u8, s.as_ref()).hash(h),
        DeValue::Integer(i) => (1u8, i.to_string()).hash(h),
        DeValue::Float(f) => (2u8, f.to_string()).hash(h),
        DeValue::Boolean(b) => (3u8, b).hash(h),
        DeValue::Datetime(d) => (4u8, d.to_string()).hash(h),
        DeValue::Array(a) => {
            (5u8, a.len()).hash(h);
            for x in a.iter() {
                hash_value(x.get_ref(), h);
            }
        }
        DeValue::Table(t) => {
            6u8.hash(h);
            hash_table(t, h);
        }
    }
}

fn unknown_type<'a>(what: &str, kind: &str, known: impl Iterator<Item = &'a str>) -> String {
    let known: Vec<_> = known.map(|k| format!("`{k}`")).collect();
    format!("unknown {what} type `{kind}`, expected one of {}", known.join(", "))
}

/// An interpolation error and the byte offset of the string it is in.
struct InterpolateError {
    message: String,
    pos: usize,
}

/// Interpolates `${VAR}` in every string of a parsed value, keeping the spans, and records in
/// `secrets` the variables interpolated into a secret field (see [`is_secret_field`]): those
/// must never reach a child process.
fn interpolate_de(
    v: &mut Spanned<DeValue<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
    secret: bool,
    secrets: &mut std::collections::BTreeSet<String>,
) -> Result<(), InterpolateError> {
    let pos = v.span().start;
    match v.get_mut() {
        DeValue::String(s) => {
            let used = std::cell::RefCell::new(Vec::new());
            let recording = |name: &str| {
                used.borrow_mut().push(name.to_owned());
                env(name)
            };
            let r = interpolate(s, &recording).map_err(|message| InterpolateError { message, pos });
            if secret {
                secrets.extend(used.into_inner());
            }
            *s = std::borrow::Cow::Owned(r?);
            Ok(())
        }
        DeValue::Array(a) => a.iter_mut().try_for_each(|x| interpolate_de(x, env, secret, secrets)),
        DeValue::Table(t) => t
            .iter_mut()
            .try_for_each(|(k, x)| interpolate_de(x, env, secret || is_secret_field(k.get_ref()), secrets)),
        _ => Ok(()),
    }
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

/// Whether a configuration field holds a secret: a token, password, secret, key material or
/// credential, or a header map (`Authorization`, API keys).
fn is_secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["token", "password", "secret", "api_key", "apikey", "credential", "authorization", "headers"]
        .iter()
        .any(|w| n.contains(w))
}
