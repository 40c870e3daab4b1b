//! `sealtrail top`: a live view of a running agent's components over its `[api]` `/metrics`
//! endpoint, like `vector top`: events/s, bytes/s, redactions/s, errors and input channel fill
//! per component, refreshed each second. `--once --format json` prints one measurement (two
//! scrapes a second apart) for scripts.
//!
//! The view is a few ANSI sequences written by hand (home, clear, bold): no terminal UI
//! library, so the binary (and the Lambda layer) stays small. Component ids and label values
//! come from the network: control characters in them are replaced before they reach the
//! terminal.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::{Request, header};

use crate::exit_codes::{self, config_error};
use crate::net::client::{Client, Connector, Endpoint, Pool};
use crate::net::tls::ClientTls;

/// The environment variable holding the `[api]` token when `--token-file` is not given.
pub const TOKEN_ENV: &str = "SEALTRAIL_API_TOKEN";

/// Time between two scrapes.
const INTERVAL: Duration = Duration::from_secs(1);
/// The longest a scrape may take (connect, request and body).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest `/metrics` body read; an agent has a handful of components.
const MAX_BODY: usize = 8 << 20;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The agent's `[api]` address.
    #[arg(long, default_value = "http://127.0.0.1:8687")]
    pub url: String,
    /// File holding the `[api]` bearer token [default: $SEALTRAIL_API_TOKEN].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA to trust for an https URL.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Print one measurement (two scrapes, one second apart) and exit.
    #[arg(long)]
    pub once: bool,
    /// `table` or `json` (one object per measurement).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The counters of one component from one scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    pub events_in: f64,
    pub events_out: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub redactions: f64,
    pub errors: f64,
    /// Input channel (batches queued, capacity), for transforms and sinks.
    pub channel: Option<(f64, f64)>,
}

/// One scrape: `(kind, id)` → counters.
pub type Scrape = BTreeMap<(String, String), Counters>;

/// Parses the Prometheus text exposition of `/metrics` into per-component counters. Lines it
/// does not know are skipped; a malformed sample line is an error naming its line.
pub fn parse_metrics(text: &str) -> anyhow::Result<Scrape> {
    let mut out = Scrape::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || anyhow::anyhow!("/metrics line {}: not a Prometheus sample", n + 1);
        let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
        let value: f64 = value.parse().map_err(|_| bad())?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                (name, parse_labels(rest.strip_suffix('}').ok_or_else(bad)?).ok_or_else(bad)?)
            }
            None => (series, BTreeMap::new()),
        };
        let (Some(kind), Some(id)) = (labels.get("component_kind"), labels.get("component_id")) else {
            continue;
        };
        let c = out.entry((kind.clone(), id.clone())).or_default();
        match name {
            "sealtrail_component_events_in_total" => c.events_in = value,
            "sealtrail_component_events_out_total" => c.events_out = value,
            "sealtrail_component_bytes_in_total" => c.bytes_in = value,
            "sealtrail_component_bytes_out_total" => c.bytes_out = value,
            "sealtrail_component_errors_total" => c.errors = value,
            "sealtrail_component_redactions_total" => c.redactions += value,
            "sealtrail_channel_batches" => c.channel.get_or_insert((0.0, 0.0)).0 = value,
            "sealtrail_channel_capacity_batches" => c.channel.get_or_insert((0.0, 0.0)).1 = value,
            _ => {}
        }
    }
    Ok(out)
}

/// `a="x",b="y\"z"` → {a: x, b: y"z}.
fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim_start_matches(',');
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.insert(key.trim().to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

/// One row of the view: totals now and rates over the last interval.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub kind: String,
    pub id: String,
    pub events_in: f64,
    pub events_out: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub redactions: f64,
    pub errors: f64,
    pub events_in_per_s: f64,
    pub events_out_per_s: f64,
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
    pub redactions_per_s: f64,
    pub errors_per_s: f64,
    /// `[queued, capacity]` batches of the input channel.
    pub channel: Option<[f64; 2]>,
}

/// Rates between two scrapes `secs` apart (a counter that went down, after an agent restart,
/// counts from zero).
pub fn rows(before: &Scrape, now: &Scrape, secs: f64) -> Vec<Row> {
    let rate = |a: f64, b: f64| if secs > 0.0 { (if b >= a { b - a } else { b }) / secs } else { 0.0 };
    let order = |k: &str| match k {
        "source" => 0,
        "transform" => 1,
        "sink" => 2,
        _ => 3,
    };
    let mut v: Vec<Row> = now
        .iter()
        .map(|((kind, id), c)| {
            let p = before.get(&(kind.clone(), id.clone())).cloned().unwrap_or_default();
            Row {
                kind: kind.clone(),
                id: id.clone(),
                events_in: c.events_in,
                events_out: c.events_out,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                redactions: c.redactions,
                errors: c.errors,
                events_in_per_s: rate(p.events_in, c.events_in),
                events_out_per_s: rate(p.events_out, c.events_out),
                bytes_in_per_s: rate(p.bytes_in, c.bytes_in),
                bytes_out_per_s: rate(p.bytes_out, c.bytes_out),
                redactions_per_s: rate(p.redactions, c.redactions),
                errors_per_s: rate(p.errors, c.errors),
                channel: c.channel.map(|(q, cap)| [q, cap]),
            }
        })
        .collect();
    v.sort_by(|a, b| order(&a.kind).cmp(&order(&b.kind)).then_with(|| a.id.cmp(&b.id)));
    v
}

/// Replaces control characters (escape sequences, bidi controls) with `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control()
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
            {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn human(v: f64, unit: &str) -> String {
    const STEPS: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut v = v;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < STEPS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 && v.fract() == 0.0 { format!("{v:.0}{unit}") } else { format!("{v:.1}{}{unit}", STEPS[i]) }
}

/// The table, one line per component.
pub fn render_table(rows: &[Row], url: &str, bold: bool) -> String {
    let (b, r) = if bold { ("\x1b[1m", "\x1b[0m") } else { ("", "") };
    let mut out = format!(
        "sealtrail top: {} ({} components, every {}s)\n",
        printable(url),
        rows.len(),
        INTERVAL.as_secs()
    );
    out.push_str(&format!(
        "{b}{:<28} {:>10} {:>10} {:>11} {:>12} {:>8} {:>8} {:>9}{r}\n",
        "COMPONENT", "EVENTS/S IN", "OUT", "BYTES/S IN", "REDACTIONS/S", "ERRORS", "ERR/S", "CHANNEL"
    ));
    for row in rows {
        let name = printable(&format!("{}.{}", row.kind, row.id));
        let channel = row.channel.map(|[q, c]| format!("{q:.0}/{c:.0}")).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<28} {:>10} {:>10} {:>11} {:>12} {:>8} {:>8} {:>9}\n",
            name,
            human(row.events_in_per_s, ""),
            human(row.events_out_per_s, ""),
            human(row.bytes_in_per_s, "B"),
            human(row.redactions_per_s, ""),
            human(row.errors, ""),
            human(row.errors_per_s, ""),
            channel
        ));
    }
    out
}

struct Target {
    url: String,
    metrics_url: String,
    client: Client,
    token: Option<zeroize::Zeroizing<String>>,
}

impl Target {
    fn new(args: &TopArgs) -> anyhow::Result<Target> {
        let url = args.url.trim().to_owned();
        let endpoint = Endpoint::parse(&url, "--url").map_err(config_error)?;
        if endpoint.authority.contains('@') {
            return Err(config_error(anyhow::anyhow!(
                "--url: do not put credentials in the URL; use --token-file or ${TOKEN_ENV}"
            )));
        }
        let token = super::client_token(args.token_file.as_deref(), TOKEN_ENV)?;
        let tls = ClientTls { ca_file: args.ca_file.clone(), ..Default::default() };
        let tls = if endpoint.https { Some(&tls) } else { None };
        let connector = Connector::new(&endpoint, tls, &[b"http/1.1"])
            .map_err(|e| config_error(anyhow::anyhow!("--ca-file: {e:#}")))?
            .with_connect_timeout(SCRAPE_TIMEOUT);
        let metrics_url = endpoint.url("/metrics");
        Ok(Target { url, metrics_url, client: Client::new(connector, Pool::KeepIdle(INTERVAL * 5)), token })
    }

    async fn scrape(&self) -> anyhow::Result<Scrape> {
        let mut req = Request::get(self.metrics_url.as_str())
            .header(header::USER_AGENT, concat!("sealtrail/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = &self.token {
            let mut v = header::HeaderValue::from_str(&format!("Bearer {}", t.as_str()))
                .map_err(|_| config_error(anyhow::anyhow!("the token is not a valid header value")))?;
            v.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, v);
        }
        let req =
            req.body(Full::new(Bytes::new())).map_err(|e| config_error(anyhow::anyhow!("--url: {e}")))?;
        let resp = tokio::time::timeout(SCRAPE_TIMEOUT, self.client.send_collect(req, MAX_BODY))
            .await
            .map_err(|_| anyhow::anyhow!("{}: no answer within {SCRAPE_TIMEOUT:?}", self.metrics_url))?
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.metrics_url))?;
        match resp.status().as_u16() {
            200 => {}
            401 => {
                return Err(config_error(anyhow::anyhow!(
                    "{}: 401 unauthorized (give the [api] token with --token-file or ${TOKEN_ENV})",
                    self.metrics_url
                )));
            }
            s => anyhow::bail!("{}: HTTP {s}", self.metrics_url),
        }
        let text = std::str::from_utf8(resp.body())
            .map_err(|_| anyhow::anyhow!("{}: the body is not UTF-8", self.metrics_url))?;
        parse_metrics(text)
    }
}

pub fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let target = Target::new(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(watch(&args, &target))
}

async fn watch(args: &TopArgs, target: &Target) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    let tty = std::io::stdout().is_terminal();
    // The first scrape must work: a wrong URL or token is an error, not an empty screen.
    let mut before = target.scrape().await.map_err(|e| e.context(format!("cannot read {}", target.url)))?;
    let mut at = Instant::now();
    loop {
        tokio::time::sleep_until((at + INTERVAL).into()).await;
        let (now, when) = match target.scrape().await {
            Ok(s) => (s, Instant::now()),
            Err(e) if args.once => return Err(e),
            Err(e) => {
                if tty && args.format == Format::Table {
                    write!(stdout, "\x1b[H\x1b[2J")?;
                }
                writeln!(stdout, "sealtrail top: {} ({e:#}); retrying", printable(&target.url))?;
                stdout.flush()?;
                at = Instant::now();
                continue;
            }
        };
        let rows = rows(&before, &now, when.duration_since(at).as_secs_f64());
        match args.format {
            Format::Json => {
                let obj = serde_json::json!({ "url": target.url, "interval_s": when.duration_since(at).as_secs_f64(), "components": rows });
                writeln!(stdout, "{obj}")?;
            }
            Format::Table => {
                if tty && !args.once {
                    // Home and clear, then the table: one frame per second.
                    write!(stdout, "\x1b[H\x1b[2J")?;
                }
                let bold = tty && std::env::var_os("NO_COLOR").is_none();
                write!(stdout, "{}", render_table(&rows, &target.url, bold))?;
            }
        }
        stdout.flush()?;
        if args.once {
            return Ok(ExitCode::from(exit_codes::OK));
        }
        before = now;
        at = when;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP sealtrail_component_events_in_total Events received.\n\
        # TYPE sealtrail_component_events_in_total counter\n\
        sealtrail_component_events_in_total{component_id=\"scrub\",component_kind=\"transform\"} 10\n\
        sealtrail_component_redactions_total{component_id=\"scrub\",component_kind=\"transform\",detector=\"card\"} 3\n\
        sealtrail_component_redactions_total{component_id=\"scrub\",component_kind=\"transform\",detector=\"iban\"} 2\n\
        sealtrail_channel_batches{component_id=\"scrub\",component_kind=\"transform\"} 1\n\
        sealtrail_channel_capacity_batches{component_id=\"scrub\",component_kind=\"transform\"} 8\n\
        sealtrail_component_events_out_total{component_id=\"a\\\"b\",component_kind=\"source\"} 4\n\
        process_resident_memory_bytes 123\n";

    #[test]
    fn parses_the_exposition_and_computes_rates() {
        let s = parse_metrics(TEXT).unwrap();
        let scrub = &s[&("transform".to_owned(), "scrub".to_owned())];
        assert_eq!(scrub.events_in, 10.0);
        assert_eq!(scrub.redactions, 5.0);
        assert_eq!(scrub.channel, Some((1.0, 8.0)));
        assert_eq!(s[&("source".to_owned(), "a\"b".to_owned())].events_out, 4.0);
        let before = s.clone();
        let mut after = s;
        after.get_mut(&("transform".to_owned(), "scrub".to_owned())).unwrap().events_in = 30.0;
        let r = rows(&before, &after, 2.0);
        assert_eq!(r[0].kind, "source", "sources first");
        assert_eq!(r[1].events_in_per_s, 10.0);
        assert!(parse_metrics("x{component_id=\"a\" 1\n").is_err());
    }

    #[test]
    fn names_from_the_network_cannot_drive_the_terminal() {
        let row = rows(&Scrape::new(), &parse_metrics(TEXT).unwrap(), 1.0).remove(0);
        let evil = Row { id: "x\x1b[2J\u{202e}y".into(), ..row };
        let t = render_table(&[evil], "http://h", false);
        assert!(t.contains("source.x?[2J?y") && !t.contains('\x1b'), "{t}");
    }
}
