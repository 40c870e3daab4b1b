//! `sealtrail redact`: a Unix filter that redacts standard input to standard output with the
//! same engine as the `redact` transform.
//!
//! It streams: it reads 256 KiB at a time and writes as soon as the engine has decided, so
//! memory stays constant on a 10 GiB input and on a single 100 MiB line. Lines are never
//! joined or split (no match contains a newline), so there is one output line per input line;
//! bytes that are not UTF-8 pass through unchanged.
//!
//! `--config FILE` takes either an agent configuration, whose `redact` transform supplies
//! the settings, or a file holding just the transform's fields (`mask = "last4"`,
//! `patterns = [...]`, …). `--stats` prints the redactions per detector to standard error at
//! the end.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::exit_codes::config_error;
use crate::redact::{Counts, Detector, Redactor};
use crate::transforms::redact::RedactConfig;

#[derive(Debug, clap::Args)]
pub struct RedactArgs {
    /// An agent configuration with one `redact` transform, or a file of `redact` fields.
    #[arg(long = "config", short = 'c')]
    pub config: Option<PathBuf>,
    /// Keyring directory, for `hmac_key` (default: as for `run`).
    #[arg(long, env = "SEALTRAIL_KEYS")]
    pub keys: Option<PathBuf>,
    /// A CloudWatch Logs data protection policy (JSON): its `Deidentify` identifiers choose the
    /// detectors (see README, "CloudWatch data protection policies").
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print the number of redactions per detector to standard error at the end.
    #[arg(long)]
    pub stats: bool,
}

pub fn run(args: RedactArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match &args.config {
        Some(p) => load_config(p).map_err(config_error)?,
        None => RedactConfig::default(),
    };
    if let Some(p) = &args.policy {
        cfg.policy = Some(p.clone());
    }
    let keys_dir = args.keys.clone().unwrap_or_else(crate::config::default_keys_dir);
    let redactor = Arc::new(cfg.redactor(&keys_dir).map_err(config_error)?);
    let counts = filter(&redactor, std::io::stdin().lock(), std::io::stdout().lock())?;
    if args.stats {
        let mut err = std::io::stderr().lock();
        writeln!(err, "{}", stats_line(&counts))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Redacts `input` to `output` in chunks; returns the counts.
///
/// Reads and writes are large (256 KiB): each read becomes one write of what the engine
/// decided, never one write per line. Standard output is line-buffered by the standard library,
/// which passes a large write through up to its last newline in one call, so a terminal still
/// sees whole lines promptly and a pipe sees few, large writes.
pub fn filter(r: &Arc<Redactor>, mut input: impl Read, mut output: impl Write) -> anyhow::Result<Counts> {
    let mut s = r.stream();
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = Vec::with_capacity(256 * 1024 + 4096);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading standard input"),
        };
        out.clear();
        s.push(&buf[..n], &mut out);
        output.write_all(&out).context("writing standard output")?;
    }
    out.clear();
    s.finish(&mut out);
    output.write_all(&out).context("writing standard output")?;
    output.flush().context("writing standard output")?;
    Ok(s.counts())
}

/// `redactions: total=3 card=2 iban=0 …` (every detector listed, zeros included).
pub fn stats_line(c: &Counts) -> String {
    let mut line = format!("redactions: total={}", c.total());
    for d in Detector::ALL {
        line.push_str(&format!(" {}={}", d.name(), c.get(d)));
    }
    line
}

/// Reads the redact settings from a configuration file (see the module documentation).
pub fn load_config(path: &Path) -> anyhow::Result<RedactConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut table: toml::Table = text.parse().with_context(|| format!("{}: invalid TOML", path.display()))?;
    let env = |name: &str| std::env::var(name).ok();
    let mut value = match table.remove("transforms") {
        Some(toml::Value::Table(transforms)) => {
            let mut found: Vec<(String, toml::Value)> = transforms
                .into_iter()
                .filter(|(_, t)| t.get("type").and_then(toml::Value::as_str) == Some("redact"))
                .collect();
            match found.len() {
                0 => anyhow::bail!("{}: no transform with `type = \"redact\"`", path.display()),
                1 => {}
                _ => {
                    let ids: Vec<_> = found.iter().map(|(id, _)| format!("transforms.{id}")).collect();
                    anyhow::bail!(
                        "{}: several redact transforms ({}); give a file with one",
                        path.display(),
                        ids.join(", ")
                    )
                }
            }
            let (_, mut t) = found.remove(0);
            if let Some(t) = t.as_table_mut() {
                t.remove("type");
                t.remove("inputs");
            }
            t
        }
        _ => {
            table.remove("type");
            toml::Value::Table(table)
        }
    };
    crate::config::interpolate_value(&mut value, &env)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    value.try_into::<RedactConfig>().map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_streams_lines() {
        let r = Arc::new(Redactor::with_defaults());
        let input = b"a 4111111111111111\nb https://u:p@h/\n\xff\xfe raw\n".to_vec();
        let mut out = Vec::new();
        let c = filter(&r, &input[..], &mut out).unwrap();
        assert_eq!(out, b"a ****\nb https://u:****@h/\n\xff\xfe raw\n".to_vec());
        assert_eq!(c.total(), 2);
        assert_eq!(
            stats_line(&c),
            "redactions: total=2 card=1 iban=0 bank_account=0 url_credentials=1 authorization=0 aws_access_key=0 \
             aws_secret_key=0 private_key=0 jwt=0 connection_string=0 secret_field=0 prefixed_token=0 keyword=0 \
             pattern=0"
        );
    }

    #[test]
    fn config_from_agent_file_or_fields() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent.toml");
        std::fs::write(
            &agent,
            "[sources.in]\ntype = \"stdin\"\n[transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\nmask = \"last4\"\n",
        )
        .unwrap();
        assert_eq!(load_config(&agent).unwrap().mask, crate::redact::Mask::Last4);
        let fields = dir.path().join("fields.toml");
        std::fs::write(&fields, "keywords = [\"Falcon\"]\n").unwrap();
        assert_eq!(load_config(&fields).unwrap().keywords, ["Falcon"]);
        std::fs::write(&fields, "colour = 1\n").unwrap();
        assert!(format!("{:#}", load_config(&fields).unwrap_err()).contains("colour"));
    }
}
