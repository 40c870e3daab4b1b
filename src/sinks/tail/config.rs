//! The configuration of the `tail` sink and its compilation (`build`) into a [`TailSink`]:
//! address, authentication and TLS are all checked here, so that `sealtrail validate` refuses
//! a tail sink that would listen without a token, and the running sink never holds the token
//! itself, only its SHA-256 digest.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::TailSink;
use super::hub::QueueBound;
use crate::component::{BuildContext, Sink, SinkConfig};
use crate::net::auth;
use crate::net::exposure;
use crate::net::server::ListenerConfig;
use crate::net::tls::{Alpn, ServerTls};

/// Configuration for the `tail` sink.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailConfig {
    /// The address to listen on, an IP address and a port (`0` picks a free port, which the
    /// agent logs). Default `127.0.0.1:8686`.
    #[serde(default = "default_address")]
    pub address: String,
    /// The bearer token clients must present, usually `"${SEALTRAIL_TAIL_TOKEN}"`. At least
    /// 16 characters. Exclusive with `token_file`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token (surrounding white space is ignored). Exclusive with `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `token` (default): clients need `Authorization: Bearer <token>`. `none`: no
    /// authentication, allowed only when `address` is a loopback address.
    #[serde(default)]
    pub auth: AuthMode,
    /// Serve HTTPS instead of HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How many events (and `{"dropped": N}` notices) may wait for one client before events
    /// for that client are dropped. Default 4096.
    #[serde(default = "default_client_queue")]
    pub client_queue: usize,
    /// How many bytes of encoded events may wait for one client before events for that
    /// client are dropped; bounds the memory a client that does not read can pin. An event
    /// larger than this never reaches any client. Default 4 MiB.
    #[serde(default = "default_client_queue_bytes")]
    pub client_queue_bytes: usize,
    /// How many clients may stream at once; more get 503. Default 16.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// How many connections may be open at once, counted before TLS and authentication;
    /// more are closed at once. Default 64.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Listener timeouts (`[sinks.X.listener]`): TLS handshake, headers, body, idle.
    #[serde(default)]
    pub listener: ListenerConfig,
    /// Allows serving a token over plain HTTP on a non-loopback address.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Allows `allow_unredacted = true` on a non-loopback `address`: unredacted events served
    /// to other hosts need this second, explicit opt-in (issue 13).
    #[serde(default)]
    pub allow_unredacted_remote: bool,
}

/// The `[sinks.<id>.tls]` table: `crt_file`, `key_file` and optionally `client_ca_file`.
pub type TlsConfig = ServerTls;

/// How clients authenticate.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Token,
    None,
}

/// A string that never appears in `Debug` output and is wiped from memory when dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(s.into()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"****\"")
    }
}

// Written by hand so that the token never reaches a log line through `{:?}` (the field type
// already hides it; this keeps the output short as well).
impl fmt::Debug for TailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("token_file", &self.token_file)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("client_queue", &self.client_queue)
            .field("client_queue_bytes", &self.client_queue_bytes)
            .field("max_clients", &self.max_clients)
            .field("max_connections", &self.max_connections)
            .field("listener", &self.listener)
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

fn default_address() -> String {
    "127.0.0.1:8686".to_owned()
}

fn default_client_queue() -> usize {
    4096
}

fn default_client_queue_bytes() -> usize {
    4 << 20
}

fn default_max_clients() -> usize {
    16
}

fn default_max_connections() -> usize {
    64
}

impl SinkConfig for TailConfig {
    fn build(&self, _cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(self.compile()?))
    }

    fn check_unredacted(&self) -> Result<(), String> {
        // A bad address is `build`'s error to report.
        let Ok(address) = crate::units::ListenAddress::parse(&self.address) else { return Ok(()) };
        if exposure::is_loopback(&address.0) || self.allow_unredacted_remote {
            return Ok(());
        }
        Err(format!(
            "`allow_unredacted = true` on the non-loopback `address` {}: events that bypass redaction \
             would be served to other hosts; bind a loopback address, route the input through \
             `redact`, or also set `allow_unredacted_remote = true`",
            address.0
        ))
    }
}

impl TailConfig {
    /// Validates the configuration and compiles it (reads the token and TLS files; binds
    /// nothing).
    pub fn compile(&self) -> anyhow::Result<TailSink> {
        let address: SocketAddr = crate::units::ListenAddress::parse(&self.address)
            .map_err(|e| anyhow::anyhow!("`address`: {e}"))?
            .0;
        let token = match self.auth {
            AuthMode::Token => Some(auth::digest(self.token()?.as_bytes())),
            AuthMode::None => {
                anyhow::ensure!(
                    self.token.is_none() && self.token_file.is_none(),
                    "`auth = \"none\"` cannot be combined with `token` or `token_file`"
                );
                anyhow::ensure!(
                    address.ip().is_loopback(),
                    "`auth = \"none\"` is only allowed on a loopback address, not {address}: \
                     anyone on the network could watch the stream; configure a `token`"
                );
                None
            }
        };
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.client_queue),
            "`client_queue` must be between 1 and 1000000 events"
        );
        anyhow::ensure!(
            (64 << 10..=1 << 30).contains(&self.client_queue_bytes),
            "`client_queue_bytes` must be between 65536 and 1073741824 bytes"
        );
        anyhow::ensure!((1..=1024).contains(&self.max_clients), "`max_clients` must be between 1 and 1024");
        anyhow::ensure!(
            self.max_connections >= self.max_clients,
            "`max_connections` ({}) must be at least `max_clients` ({})",
            self.max_connections,
            self.max_clients
        );
        let limits = self.listener.limits(self.max_connections)?;
        let tls = match &self.tls {
            Some(t) => Some(t.server_config(Alpn::Http1)?),
            None => None,
        };
        if token.is_some() && tls.is_none() && !exposure::is_loopback(&address) {
            anyhow::ensure!(
                self.allow_plaintext,
                "`address` = {address} is not a loopback address and no `tls` is configured: the \
                 bearer token and the event stream would cross the network in plain text; \
                 configure `tls` or set `allow_plaintext = true`"
            );
        }
        Ok(TailSink {
            address,
            token,
            tls,
            bound: QueueBound { slots: self.client_queue, bytes: self.client_queue_bytes },
            max_clients: self.max_clients,
            limits,
        })
    }

    /// The configured token, from `token` or `token_file` ([`auth::read_token`]). Errors never
    /// include it.
    fn token(&self) -> anyhow::Result<Zeroizing<String>> {
        auth::read_token(self.token.as_ref().map(|t| t.0.as_str()), self.token_file.as_ref())
            .map_err(|e| anyhow::anyhow!("tail token: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> TailConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn err(toml_text: &str) -> String {
        format!("{:#}", parse(toml_text).compile().err().expect("an error"))
    }

    const TOKEN: &str = "s3cr3t-t0ken-abcdefgh";

    #[test]
    fn defaults() {
        let c = parse(&format!("token = \"{TOKEN}\""));
        let s = c.compile().unwrap();
        assert_eq!(s.address.to_string(), "127.0.0.1:8686");
        assert_eq!(s.bound.slots, 4096);
        assert_eq!(s.bound.bytes, 4 << 20);
        assert_eq!(s.limits.max_connections, 64);
        assert_eq!(s.token, Some(auth::digest(TOKEN.as_bytes())));
    }

    #[test]
    fn refuses_to_start_without_a_token() {
        assert!(err("").contains("no token configured"));
        assert!(err("token = \"\"").contains("empty"));
        assert!(err("token = \"short\"").contains("too short"));
    }

    #[test]
    fn auth_none_only_on_loopback() {
        assert!(parse("auth = \"none\"").compile().unwrap().token.is_none());
        assert!(parse("auth = \"none\"\naddress = \"[::1]:0\"").compile().is_ok());
        let e = err("auth = \"none\"\naddress = \"0.0.0.0:8686\"");
        assert!(e.contains("only allowed on a loopback address"), "{e}");
        let e = err(&format!("auth = \"none\"\ntoken = \"{TOKEN}\""));
        assert!(e.contains("cannot be combined"), "{e}");
    }

    #[test]
    fn errors_never_contain_the_token() {
        let secret = "a secret that has spaces in it";
        let e = err(&format!("token = \"{secret}\""));
        assert!(!e.contains(secret), "{e}");
        let c = parse(&format!("token = \"{TOKEN}\"\ntoken_file = \"/nonexistent\""));
        assert!(!format!("{c:?}").contains(TOKEN));
        let e = err(&format!("token = \"{TOKEN}\"\ntoken_file = \"/nonexistent\""));
        assert!(e.contains("not both") && !e.contains(TOKEN), "{e}");
    }

    /// Issue 13: a token over plain HTTP on a non-loopback address is refused unless
    /// `allow_plaintext` says so.
    #[test]
    fn a_token_over_plain_http_off_loopback_needs_allow_plaintext() {
        let e = err(&format!("token = \"{TOKEN}\"\naddress = \"0.0.0.0:8686\""));
        assert!(e.contains("`address` = 0.0.0.0:8686 is not a loopback address"), "{e}");
        assert!(e.contains("allow_plaintext = true"), "{e}");
        assert!(!e.contains(TOKEN), "{e}");
        let ok = parse(&format!("token = \"{TOKEN}\"\naddress = \"10.1.2.3:8686\"\nallow_plaintext = true"));
        assert!(ok.compile().is_ok());
        assert!(parse(&format!("token = \"{TOKEN}\"\naddress = \"[::1]:8686\"")).compile().is_ok());
    }

    /// Issue 13: `allow_unredacted = true` on `0.0.0.0` was accepted silently.
    #[test]
    fn unredacted_events_off_loopback_need_allow_unredacted_remote() {
        let e = parse(&format!("token = \"{TOKEN}\"\naddress = \"0.0.0.0:8686\"\nallow_plaintext = true"))
            .check_unredacted()
            .unwrap_err();
        assert!(e.contains("0.0.0.0:8686") && e.contains("allow_unredacted_remote = true"), "{e}");
        let ok = parse(&format!(
            "token = \"{TOKEN}\"\naddress = \"10.1.2.3:8686\"\nallow_plaintext = true\nallow_unredacted_remote = true"
        ));
        assert_eq!(ok.check_unredacted(), Ok(()));
        assert_eq!(
            parse(&format!("token = \"{TOKEN}\"\naddress = \"[::1]:8686\"")).check_unredacted(),
            Ok(())
        );
    }

    #[test]
    fn byte_bound_and_listener_limits_are_checked() {
        let e = err(&format!("token = \"{TOKEN}\"\nclient_queue_bytes = 10"));
        assert!(e.contains("`client_queue_bytes` must be between"), "{e}");
        let e = err(&format!("token = \"{TOKEN}\"\nmax_connections = 4"));
        assert!(e.contains("`max_connections` (4) must be at least `max_clients` (16)"), "{e}");
        let e = err(&format!("token = \"{TOKEN}\"\n[listener]\nidle_timeout = 0"));
        assert!(e.contains("`listener.idle_timeout` = 0ms must be between 1ms and 1d"), "{e}");
        let s = parse(&format!("token = \"{TOKEN}\"\n[listener]\nidle_timeout_secs = 5")).compile().unwrap();
        assert_eq!(s.limits.idle_timeout, std::time::Duration::from_secs(5));
    }

    #[test]
    fn token_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
        let c = parse(&format!("token_file = \"{}\"", p.display()));
        assert_eq!(c.compile().unwrap().token, Some(auth::digest(TOKEN.as_bytes())));
        let e = err("token_file = \"/nonexistent/token\"");
        assert!(e.contains("cannot read /nonexistent/token"), "{e}");
    }

    #[test]
    fn bad_fields_are_named() {
        let e = err(&format!("token = \"{TOKEN}\"\naddress = \"localhost:80\""));
        assert!(e.contains("`address`"), "{e}");
        let e = err(&format!("token = \"{TOKEN}\"\nclient_queue = 0"));
        assert!(e.contains("client_queue"), "{e}");
        let e = toml::from_str::<TailConfig>("tokn = \"x\"").unwrap_err().to_string();
        assert!(e.contains("unknown field `tokn`"), "{e}");
        let e =
            err(&format!("token = \"{TOKEN}\"\n[tls]\ncrt_file = \"/nope.crt\"\nkey_file = \"/nope.key\""));
        assert!(e.contains("`tls.crt_file`: cannot read /nope.crt"), "{e}");
    }
}
