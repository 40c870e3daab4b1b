//! `sealtrail tail`: connect to an agent's `tail` sink and print its events as they arrive.
//!
//! Flags become a query string (the filters run on the agent, so filtered-out events never
//! cross the network); the token comes from `--token-file` or `$SEALTRAIL_TAIL_TOKEN`, never
//! from a flag, so it does not show in `ps`. Text output escapes control characters (an event
//! cannot move the cursor, clear the screen or reorder text on the watcher's terminal) and
//! colours the level only on a terminal without `NO_COLOR`. When the agent goes away after a
//! successful connection the command reconnects with exponential backoff; a first connection
//! that fails, a refused token (401) and a refused query (400) are errors.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::http::{Request, header};
use serde_json::Value as J;

use crate::event::severity;
use crate::exit_codes::{self, config_error};
use crate::filter::FilterArgs;
use crate::net::client::{Client, ClientError, Connector, Endpoint, Pool};
use crate::net::tls::ClientTls;

/// The environment variable holding the token when `--token-file` is not given.
pub const TOKEN_ENV: &str = "SEALTRAIL_TAIL_TOKEN";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest line accepted from the server; a peer that never sends a newline cannot
/// make the client buffer without end.
const MAX_LINE: usize = 64 << 20;

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The agent's tail sink.
    #[arg(long, default_value = "http://127.0.0.1:8686")]
    pub url: String,
    /// File holding the bearer token [default: $SEALTRAIL_TAIL_TOKEN].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// `--grep`, `--level`, `--service`, `--signal`, `--trace-id`: the filters shared with
    /// `sealtrail query` and the `filter` transform, run on the agent.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// `text`: time, level, service and message; `json`: the events as JSON lines.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// PEM file of the CA (or self-signed certificate) to trust for an https URL
    /// [default: the system's trusted roots, or `SSL_CERT_FILE`/`SSL_CERT_DIR`].
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Exit when the stream ends instead of reconnecting.
    #[arg(long)]
    pub no_reconnect: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    // Errors (and a broken pipe, `sealtrail tail | head`) are handled by `main`.
    let target = Target::new(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(follow(&args, &target))
}

/// Everything needed to connect, checked before the first attempt.
struct Target {
    url: String,
    /// The absolute URL of the stream request (path and query included).
    request_url: String,
    /// The agent's HTTP client ([`crate::net::client`]), a fresh connection per session.
    client: Client,
    token: Option<zeroize::Zeroizing<String>>,
}

impl Target {
    fn new(args: &TailArgs) -> anyhow::Result<Target> {
        let url = args.url.trim().to_owned();
        let endpoint = Endpoint::parse(&url, "--url").map_err(config_error)?;
        if endpoint.authority.contains('@') {
            return Err(config_error(anyhow::anyhow!(
                "--url: do not put credentials in the URL; use --token-file or ${TOKEN_ENV}"
            )));
        }

        // Check the filters here, so that a typo is a usage error before any connection.
        let spec = args.filter.spec();
        spec.build().map_err(|e| config_error(anyhow::anyhow!("{}", e.for_flags())))?;
        let q = spec.to_query();
        let request_url =
            if q.is_empty() { endpoint.url("/v1/tail") } else { endpoint.url(&format!("/v1/tail?{q}")) };

        let token = super::client_token(args.token_file.as_deref(), TOKEN_ENV)?;
        let tls = ClientTls { ca_file: args.ca_file.clone(), ..Default::default() };
        let tls = if endpoint.https { Some(&tls) } else { None };
        let connector = Connector::new(&endpoint, tls, &[b"http/1.1"])
            .map_err(|e| config_error(anyhow::anyhow!("--ca-file: {e:#}")))?
            .with_connect_timeout(CONNECT_TIMEOUT);
        Ok(Target { url, request_url, client: Client::new(connector, Pool::Never), token })
    }
}

/// Why a session ended.
enum Ended {
    /// The agent ended the stream (it is stopping).
    Stream,
    /// The connection failed or broke: worth retrying.
    Transient(anyhow::Error),
    /// Retrying cannot help (401, 400, a TLS certificate problem, …).
    Fatal(anyhow::Error),
}

async fn follow(args: &TailArgs, target: &Target) -> anyhow::Result<ExitCode> {
    let mut printer = Printer::new(args.format);
    let mut connected_once = false;
    let mut backoff = BACKOFF_FIRST;
    let mut announced_loss = false;
    loop {
        let mut connected = false;
        let ended = session(target, &mut printer, &mut connected).await;
        if connected {
            connected_once = true;
            backoff = BACKOFF_FIRST;
            announced_loss = false;
        }
        match ended {
            Ended::Fatal(e) => return Err(e),
            Ended::Transient(e) if !connected_once => {
                return Err(e.context(format!("cannot reach the agent's tail sink at {}", target.url)));
            }
            Ended::Stream if args.no_reconnect => return Ok(ExitCode::from(exit_codes::OK)),
            Ended::Transient(e) if args.no_reconnect => {
                return Err(e.context(format!("lost the connection to {}", target.url)));
            }
            Ended::Stream | Ended::Transient(_) if announced_loss => {}
            Ended::Stream => {
                eprintln!("sealtrail: the agent ended the stream; reconnecting");
                announced_loss = true;
            }
            Ended::Transient(e) => {
                eprintln!("sealtrail: lost the connection to {} ({e:#}); reconnecting", target.url);
                announced_loss = true;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: request, response, then every line of the stream.
async fn session(target: &Target, printer: &mut Printer, connected: &mut bool) -> Ended {
    let mut req = Request::get(target.request_url.as_str())
        .header(header::ACCEPT, "application/x-ndjson")
        .header(header::USER_AGENT, concat!("sealtrail/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = &target.token {
        let mut v = match header::HeaderValue::from_str(&format!("Bearer {}", t.as_str())) {
            Ok(v) => v,
            Err(_) => {
                return Ended::Fatal(config_error(anyhow::anyhow!("the token is not a valid header value")));
            }
        };
        v.set_sensitive(true);
        req = req.header(header::AUTHORIZATION, v);
    }
    let req = match req.body(Full::new(Bytes::new())) {
        Ok(r) => r,
        Err(e) => return Ended::Fatal(config_error(anyhow::anyhow!("--url: {e}"))),
    };
    let resp = match target.client.send(req).await {
        Ok(r) => r,
        // A certificate the client does not trust will not change by retrying.
        Err(e @ ClientError::Tls(_)) => {
            return Ended::Fatal(anyhow::anyhow!("TLS with {} failed: {e}", target.url));
        }
        Err(e) => return Ended::Transient(e.into()),
    };
    let status = resp.status();
    if status != StatusCode::OK {
        let body = match tokio::time::timeout(CONNECT_TIMEOUT, resp.into_body().collect()).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
            _ => String::new(),
        };
        let body = escape_text(&body);
        return match status {
            StatusCode::UNAUTHORIZED => Ended::Fatal(config_error(anyhow::anyhow!(
                "{}: 401 unauthorized: {}",
                target.url,
                if target.token.is_some() {
                    "the agent refused the token (check --token-file or $SEALTRAIL_TAIL_TOKEN)"
                } else {
                    "the agent needs a token: give --token-file or set $SEALTRAIL_TAIL_TOKEN"
                }
            ))),
            StatusCode::BAD_REQUEST => Ended::Fatal(config_error(anyhow::anyhow!("{}: {body}", target.url))),
            StatusCode::SERVICE_UNAVAILABLE => Ended::Transient(anyhow::anyhow!("503: {body}")),
            s => Ended::Fatal(anyhow::anyhow!("{}: unexpected response {s}: {body}", target.url)),
        };
    }
    *connected = true;
    eprintln!("sealtrail: connected to {}", target.url);
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Ended::Transient(e.into()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                pending.extend_from_slice(&data);
                let Some(last) = memchr::memrchr(b'\n', &pending) else {
                    if pending.len() > MAX_LINE {
                        return Ended::Fatal(anyhow::anyhow!(
                            "{}: a line longer than 64 MiB; is this a tail sink?",
                            target.url
                        ));
                    }
                    continue;
                };
                let r = pending[..=last]
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .try_for_each(|l| printer.line(l));
                if let Err(e) = r.and_then(|()| printer.flush()) {
                    return Ended::Fatal(anyhow::Error::new(e).context("writing to standard output"));
                }
                pending.drain(..=last);
            }
        }
    }
    Ended::Stream
}

/// Prints stream lines in the chosen format.
struct Printer {
    format: Format,
    color: bool,
    out: std::io::BufWriter<std::io::Stdout>,
    text: String,
}

impl Printer {
    fn new(format: Format) -> Printer {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Printer {
            format,
            color: std::io::stdout().is_terminal() && !no_color,
            out: std::io::BufWriter::new(std::io::stdout()),
            text: String::new(),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let line = String::from_utf8_lossy(line);
        match self.format {
            Format::Json => {
                self.text.clear();
                escape_json_line(&line, &mut self.text);
                self.text.push('\n');
                self.out.write_all(self.text.as_bytes())
            }
            Format::Text => {
                let Ok(v) = serde_json::from_str::<J>(&line) else {
                    // Not what an agent sends; show it, defanged, rather than lose it.
                    return writeln!(self.out, "{}", escape_text(&line));
                };
                if let Some(n) = v.get("dropped").and_then(J::as_u64) {
                    self.out.flush()?;
                    eprintln!("sealtrail: {n} events dropped by the agent: this client fell behind");
                    return Ok(());
                }
                self.text.clear();
                format_text(&v, self.color, &mut self.text);
                self.text.push('\n');
                self.out.write_all(self.text.as_bytes())
            }
        }
    }
}

/// `2026-11-27T18:13:22.1Z INFO  checkout message`, or for a span
/// `2026-11-27T18:13:22.1Z SPAN  checkout POST /pay 12.3ms status=ERROR trace=…`. Every
/// piece of event data is escaped.
pub fn format_text(v: &J, color: bool, out: &mut String) {
    let s = |k: &str| v.get(k).and_then(J::as_str).unwrap_or("");
    let or_dash = |x: &str| if x.is_empty() { "-".to_owned() } else { escape_text(x) };
    if s("signal") == "spans" {
        let start = s("start_time");
        let ms = match (parse_time(start), parse_time(s("end_time"))) {
            (Some(a), Some(b)) => format!("{:.1}ms", (b - a) as f64 / 1e6),
            _ => "?ms".to_owned(),
        };
        let status = match v.get("status_code").and_then(J::as_i64) {
            Some(1) => "OK",
            Some(2) => "ERROR",
            _ => "UNSET",
        };
        let level = if status == "ERROR" { "ERROR" } else { "SPAN" };
        out.push_str(&or_dash(start));
        out.push(' ');
        push_level(out, "SPAN", level, color);
        out.push_str(&format!(
            " {} {} {ms} status={status} trace={}",
            or_dash(s("service")),
            escape_text(s("name")),
            or_dash(s("trace_id"))
        ));
        let msg = s("status_message");
        if !msg.is_empty() {
            out.push_str(&format!(" message={}", escape_text(msg)));
        }
        return;
    }
    let time = if s("time").is_empty() { s("observed_time") } else { s("time") };
    out.push_str(&or_dash(time));
    out.push(' ');
    let level = escape_text(s("severity_text"));
    let level = if level.is_empty() { "-".to_owned() } else { level };
    let n = v.get("severity_number").and_then(J::as_i64).unwrap_or(0) as i32;
    push_level(out, &level, severity::level_name(n), color);
    out.push(' ');
    out.push_str(&or_dash(s("service")));
    out.push(' ');
    out.push_str(&escape_text(s("body")));
}

/// The level, padded to five columns, coloured by `class` (a canonical level name).
fn push_level(out: &mut String, level: &str, class: &str, color: bool) {
    let code = match class {
        "FATAL" | "ERROR" => "31",
        "WARN" => "33",
        "INFO" => "32",
        "DEBUG" => "34",
        "TRACE" => "2",
        _ => "",
    };
    if color && !code.is_empty() {
        out.push_str(&format!("\x1b[{code}m{level:<5}\x1b[0m"));
    } else {
        out.push_str(&format!("{level:<5}"));
    }
}

fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok()?.timestamp_nanos_opt()
}

/// Characters that must not reach a terminal raw: C0 and C1 controls, DEL, and the Unicode
/// bidirectional controls (which can make text read differently from what it is).
fn is_dangerous(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Event text made safe for a terminal: `\n`, `\r`, `\t` and other dangerous characters
/// become visible escapes (`\n`, `\u{1b}`), so one event is one line and cannot send
/// terminal control sequences.
pub fn escape_text(s: &str) -> String {
    if !s.chars().any(is_dangerous) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_dangerous(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A JSON line with the dangerous characters JSON allows raw inside strings (DEL, C1 and
/// bidirectional controls; the agent's encoder already escapes C0) written as `\uXXXX`: the
/// same JSON value, safe on a terminal. Such characters can only occur inside strings, so
/// the line stays valid JSON.
pub fn escape_json_line(line: &str, out: &mut String) {
    for c in line.chars() {
        if is_dangerous(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_text("plain"), "plain");
        assert_eq!(
            escape_text("a\nb\x1b[2Jc\u{9b}d\u{202e}e\x7f"),
            "a\\nb\\u{1b}[2Jc\\u{9b}d\\u{202e}e\\u{7f}"
        );
        let mut out = String::new();
        escape_json_line("{\"body\":\"x\u{9b}31m\u{202e}\"}", &mut out);
        assert_eq!(out, "{\"body\":\"x\\u009b31m\\u202e\"}");
        let v: J = serde_json::from_str(&out).unwrap();
        assert_eq!(v["body"], "x\u{9b}31m\u{202e}");
    }

    #[test]
    fn text_lines() {
        let v: J = serde_json::from_str(
            r#"{"signal":"logs","time":null,"observed_time":"2026-11-27T18:13:22Z","severity_text":"WARN",
                "severity_number":13,"body":"disk \u001b[31m full","service":"api"}"#,
        )
        .unwrap();
        let mut out = String::new();
        format_text(&v, false, &mut out);
        assert_eq!(out, "2026-11-27T18:13:22Z WARN  api disk \\u{1b}[31m full");
        out.clear();
        format_text(&v, true, &mut out);
        assert_eq!(out, "2026-11-27T18:13:22Z \x1b[33mWARN \x1b[0m api disk \\u{1b}[31m full");

        let v: J = serde_json::from_str(
            r#"{"signal":"spans","start_time":"2026-11-27T18:13:22Z","end_time":"2026-11-27T18:13:22.0123Z",
                "name":"POST /pay","status_code":2,"status_message":"","service":"","trace_id":"ab"}"#,
        )
        .unwrap();
        out.clear();
        format_text(&v, false, &mut out);
        assert_eq!(out, "2026-11-27T18:13:22Z SPAN  - POST /pay 12.3ms status=ERROR trace=ab");
    }
}
