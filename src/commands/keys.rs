//! `sealtrail keys`: manage the keyring (create, list, rotate, show, import) and verify the
//! query audit log. Never prints key material.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::exit_codes::{self, config_error, integrity_error};
use crate::keys::{Keyring, audit, parse_material};

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// Keyring directory (default: `SEALTRAIL_KEYS`, else `$XDG_DATA_HOME/sealtrail/keys`).
    #[arg(long, global = true, env = "SEALTRAIL_KEYS")]
    pub keys: Option<PathBuf>,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key with a fresh random version 1.
    Create { name: String },
    /// List every key: name, versions, where it comes from.
    List,
    /// Add a version that encrypts from now on (older versions still decrypt).
    Rotate { name: String },
    /// Show a key's versions and creation times.
    Show { name: String },
    /// Create a key from existing material: a file holding `base64:<32 bytes>` or 32 raw bytes.
    Import { name: String, file: PathBuf },
    /// Destroy a key (or one version) for good: the material is overwritten and removed, and
    /// every segment sealed under it becomes unreadable ("shredded"). Asks to type the key id
    /// unless --yes. AWS KMS keys are destroyed in KMS (ScheduleKeyDeletion).
    Destroy {
        name: String,
        /// Destroy only this version (the newest remaining one encrypts from then on).
        #[arg(long)]
        version: Option<u32>,
        /// Do not ask for the typed confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Re-wrap the data key of every segment under NAME (in the given data directories or
    /// files) under NAME's newest version, rewriting only the key material in each file's
    /// tail; older versions can then be destroyed. Atomic per file, repeatable.
    Rewrap {
        name: String,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the query audit log; with --verify, check its HMAC chain under the keyring's
    /// audit key and its head (exit 3 if broken or cut short).
    Audit {
        #[arg(long)]
        verify: bool,
        /// With --verify: the record count a previous verify printed (kept outside the
        /// keyring), instead of `audit.head`.
        #[arg(long, requires = "head", requires = "verify")]
        records: Option<u64>,
        /// With --verify: the head hash a previous verify printed.
        #[arg(long, requires = "records", requires = "verify")]
        head: Option<String>,
    },
}

/// `keys destroy`: the typed confirmation, the audit record (written first: no destruction
/// goes unrecorded), then [`Keyring::destroy`].
fn destroy(
    kr: &Keyring,
    dir: &std::path::Path,
    name: &str,
    version: Option<u32>,
    yes: bool,
) -> anyhow::Result<()> {
    let key_err = |e: crate::keys::KeyError| match e {
        crate::keys::KeyError::Io { .. } => anyhow::Error::from(e),
        other => config_error(other),
    };
    // Fails early (no prompt) for a missing key or version, or an environment key.
    let key = kr.get(name).map_err(key_err)?;
    if key.from_env {
        return Err(config_error(crate::keys::KeyError::FromEnvironment(name.to_owned())));
    }
    if let Some(v) = version {
        key.version(v).map_err(key_err)?;
    }
    let target = match version {
        Some(v) => format!("{name}#{v}"),
        None => name.to_owned(),
    };
    if !yes {
        use std::io::BufRead;
        eprint!(
            "This destroys {target} for good: every segment sealed under it becomes unreadable.\n\
             Type `{target}` to confirm: "
        );
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).context("reading the confirmation")?;
        if answer.trim_end_matches(['\n', '\r']) != target {
            return Err(config_error(anyhow::anyhow!("not confirmed: nothing was destroyed")));
        }
    }
    let ids: Vec<String> = match version {
        Some(v) => vec![format!("{name}#{v}")],
        None => key.versions.iter().map(|v| v.id()).collect(),
    };
    let mut filters = serde_json::Map::new();
    filters.insert("action".into(), "keys destroy".into());
    let record = audit::Record {
        uid: audit::current_uid(),
        segments: Vec::new(),
        key_ids: ids,
        filters,
        output: "-".into(),
    };
    audit::append(dir, &record).context("writing the audit record (nothing was destroyed)")?;
    let gone = kr.destroy(name, version).map_err(key_err)?;
    let list: Vec<String> = gone.iter().map(|v| format!("{name}#{v}")).collect();
    println!(
        "destroyed {}: the material is overwritten and removed; segments under it now read as shredded",
        list.join(", ")
    );
    Ok(())
}

/// `keys rewrap`: one audit record naming every candidate segment (no record, no change),
/// then each segment re-wrapped on its own; a failure is reported and the others go on.
fn rewrap(kr: Keyring, dir: &std::path::Path, name: &str, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use crate::segment::rewrap::{Rewrapped, rewrap};
    if crate::keys::is_kms_ref(name) {
        return Err(config_error(anyhow::anyhow!(
            "{name} is an AWS KMS key: KMS rotates its key material itself and old segments stay readable"
        )));
    }
    let kr = std::sync::Arc::new(kr);
    let current = kr.get(name).map_err(config_error)?.current().id();
    let mut files = Vec::new();
    for p in paths {
        files.extend(crate::segment::find_segments(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?);
    }
    let mut filters = serde_json::Map::new();
    filters.insert("action".into(), "keys rewrap".into());
    let record = audit::Record {
        uid: audit::current_uid(),
        segments: files.iter().map(|f| f.display().to_string()).collect(),
        key_ids: vec![current.clone()],
        filters,
        output: "-".into(),
    };
    audit::append(dir, &record).context("writing the audit record (nothing was re-wrapped)")?;
    let (mut done, mut already, mut other, mut failed) = (0, 0, 0, 0);
    for f in &files {
        match rewrap(f, &kr, name) {
            Ok(Rewrapped::Done { .. }) => done += 1,
            Ok(Rewrapped::Current) => already += 1,
            Ok(Rewrapped::OtherKey(_)) => other += 1,
            Err(e) => {
                eprintln!("sealtrail: {e:#}");
                failed += 1;
            }
        }
    }
    println!(
        "re-wrapped {done} segment(s) under {current}; {already} already under it, {other} under other keys, {failed} failed"
    );
    Ok(ExitCode::from(if failed > 0 { exit_codes::INTEGRITY } else { exit_codes::OK }))
}

/// The keyring directory of a command: the flag or environment, else the default.
pub fn keys_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(crate::config::default_keys_dir)
}

pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let dir = keys_dir(args.keys);
    let kr = Keyring::open(&dir);
    let key_err = |e: crate::keys::KeyError| match e {
        crate::keys::KeyError::Io { .. } => anyhow::Error::from(e),
        other => config_error(other),
    };
    match args.command {
        KeysCommand::Create { name } => {
            let k = kr.create(&name).map_err(key_err)?;
            println!("created key {} in {}", k.current().id(), dir.display());
        }
        KeysCommand::Rotate { name } => {
            let k = kr.rotate(&name).map_err(key_err)?;
            println!("rotated key {name}: version {} encrypts from now on", k.current().version);
        }
        KeysCommand::Import { name, file } => {
            let raw = zeroize::Zeroizing::new(
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
            );
            let material = if raw.len() == 32 {
                let mut m = zeroize::Zeroizing::new([0u8; 32]);
                m.copy_from_slice(&raw);
                m
            } else {
                let text = std::str::from_utf8(&raw).map_err(|_| {
                    config_error(anyhow::anyhow!(
                        "{}: neither 32 raw bytes nor `base64:…` text",
                        file.display()
                    ))
                })?;
                parse_material(text, &file.display().to_string()).map_err(config_error)?
            };
            let k = kr.import(&name, material).map_err(key_err)?;
            println!("imported key {} into {}", k.current().id(), dir.display());
        }
        KeysCommand::Destroy { name, .. } if crate::keys::is_kms_ref(&name) => {
            return Err(config_error(anyhow::anyhow!(
                "{name} is an AWS KMS key: sealtrail holds no material for it. Destroy it in KMS with \
                 ScheduleKeyDeletion (`aws kms schedule-key-deletion --key-id <ARN> --pending-window-in-days 7`); \
                 its segments become unreadable when the deletion completes"
            )));
        }
        KeysCommand::Destroy { name, version, yes } => destroy(&kr, &dir, &name, version, yes)?,
        KeysCommand::Rewrap { name, paths } => return rewrap(kr, &dir, &name, &paths),
        KeysCommand::List => {
            let keys = kr.list();
            if keys.is_empty() {
                println!("no keys in {}", dir.display());
            }
            println!("{:<24} {:>8} {:<22} SOURCE", "NAME", "VERSIONS", "CURRENT (CREATED)");
            let mut bad = false;
            for (name, k) in keys {
                match k {
                    Ok(k) => {
                        let src = if k.from_env {
                            format!("env SEALTRAIL_KEY_{}", crate::keys::env_suffix(&name))
                        } else {
                            "file".to_owned()
                        };
                        let cur = k.current();
                        println!(
                            "{:<24} {:>8} {:<22} {src}",
                            name,
                            k.versions.len(),
                            format!("#{} ({})", cur.version, cur.created)
                        );
                    }
                    Err(e) => {
                        bad = true;
                        eprintln!("sealtrail: {e}");
                    }
                }
            }
            if bad {
                return Ok(ExitCode::from(exit_codes::CONFIG));
            }
        }
        KeysCommand::Show { name } if crate::keys::is_kms_ref(&name) => {
            crate::keys::check_ref(&name).map_err(config_error)?;
            let kms = crate::keys::KmsProvider::new(crate::keys::KmsOptions {
                endpoint: None,
                audit_dir: dir.clone(),
            })?;
            let id = name.strip_prefix(crate::keys::kms::PREFIX).unwrap_or(&name);
            let info = kms.describe(id)?;
            println!("key {name}");
            println!("  source: AWS KMS ({})", info.region);
            println!("  arn: {}", info.arn);
            println!("  state: {}", info.state);
            println!("  spec: {}  manager: {}", info.key_spec, info.key_manager);
        }
        KeysCommand::Show { name } => {
            let k = kr.get(&name).map_err(key_err)?;
            println!("key {name}");
            if k.from_env {
                println!("  source: environment (SEALTRAIL_KEY_{})", crate::keys::env_suffix(&name));
            } else {
                println!("  source: {}", dir.join(format!("{name}.json")).display());
            }
            for v in &k.versions {
                let cur = if v.version == k.current().version { "  (encrypts)" } else { "" };
                println!(
                    "  {}  created {}{cur}",
                    v.id(),
                    if v.created.is_empty() { "-" } else { &v.created }
                );
            }
        }
        KeysCommand::Audit { verify, records, head } => {
            let path = dir.join(audit::FILE);
            if verify {
                let expect = records.zip(head).map(|(records, hash)| audit::Head { records, hash });
                match audit::verify(&dir, expect.as_ref()) {
                    Ok(v) => {
                        if v.torn {
                            eprintln!(
                                "sealtrail: the last line of {} is torn (an interrupted query); it is ignored",
                                path.display()
                            );
                        }
                        let head = v.last.map(|(_, h)| h).unwrap_or_default();
                        println!(
                            "audit log {}: {} records, chain intact, head {head} (keep `--records {} --head {head}` elsewhere to detect truncation later)",
                            path.display(),
                            v.records,
                            v.records
                        );
                    }
                    Err(e @ (audit::AuditError::Broken { .. } | audit::AuditError::Head { .. })) => {
                        return Err(integrity_error(e));
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                print!("{text}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
