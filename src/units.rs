//! Units that configuration values carry: [`Duration`] (`"5m"`, `"250ms"` or plain seconds)
//! and [`ListenAddress`] (`"127.0.0.1:4317"`). A leaf module that imports nothing from the
//! crate, so every layer (telemetry, components, commands) parses them the same way.

use std::fmt;
use std::net::SocketAddr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration as configuration writes it: a string with a unit (`"250ms"`, `"30s"`, `"5m"`,
/// `"1h"`, `"2d"`) or a plain number of seconds (`300`, `"300"`, `0.5`). Fields that used to
/// take seconds under a `_secs` name keep that name as a serde alias.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Duration {
        Duration(std::time::Duration::from_secs(s))
    }

    pub const fn from_millis(ms: u64) -> Duration {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// The standard library duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// Parses a configuration value written as a string: a number with a unit, or digits
    /// alone meaning seconds.
    ///
    /// # Errors
    /// A message that quotes the value and shows the accepted forms.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t.parse().map(Duration::from_secs).map_err(|_| not_a_duration(s));
        }
        parse_duration(t).map(Duration).ok_or_else(|| not_a_duration(s))
    }
}

fn not_a_duration(s: &str) -> String {
    format!(
        "{s:?} is not a duration: use seconds (`300`) or a number with ms, s, m, h or d (`250ms`, `30s`, `5m`)"
    )
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> std::time::Duration {
        d.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Duration {
        Duration(d)
    }
}

impl fmt::Display for Duration {
    /// The shortest exact form: `250ms`, `30s`, `5m`, `1h`, `2d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 || ms == 0 {
            return write!(f, "{ms}ms");
        }
        let s = ms / 1000;
        match () {
            _ if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            _ if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            _ if s % 60 == 0 => write!(f, "{}m", s / 60),
            _ => write!(f, "{s}s"),
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds (`300`) or a string such as \"250ms\", \"30s\", \"5m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom(format!("duration {v} is negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                std::time::Duration::try_from_secs_f64(v)
                    .map(Duration)
                    .map_err(|_| E::custom(format!("duration {v} is not a number of seconds")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Deserializes a field kept from before [`Duration`]: a whole number of milliseconds under an
/// `_ms` name (`initial_backoff_ms = 100`). A plain alias cannot carry it, because a plain
/// number in the new field means seconds.
pub fn legacy_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let ms = u64::deserialize(d)?;
    Ok(Some(Duration::from_millis(ms)))
}

/// The value of a duration setting that has a current name and an old `_ms` name: the one that
/// is set, else `default`.
///
/// # Errors
/// Both names set: the message names both, so the user keeps one.
pub fn either(
    name: &str,
    value: Option<Duration>,
    legacy_name: &str,
    legacy: Option<Duration>,
    default: Duration,
) -> Result<Duration, String> {
    match (value, legacy) {
        (Some(_), Some(_)) => Err(format!("`{name}` and `{legacy_name}` are the same setting; keep one")),
        (Some(v), None) | (None, Some(v)) => Ok(v),
        (None, None) => Ok(default),
    }
}

/// Parses a duration that must carry its unit (`500ms`, `30s`, `5m`, `1h`, `2d`): what the
/// command line takes (`query --since 15m`), where a bare number could be a timestamp.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "ms" => return Some(std::time::Duration::from_millis(n)),
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

/// An address a listener binds: `host:port` with an IP literal (`127.0.0.1:4317`,
/// `[::1]:8686`, `0.0.0.0:4318`). Host names are refused: a listener must say which
/// interface it exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddress(pub SocketAddr);

impl ListenAddress {
    /// # Errors
    /// A message that quotes the value and shows the accepted form.
    pub fn parse(s: &str) -> Result<ListenAddress, String> {
        s.trim().parse().map(ListenAddress).map_err(|_| {
            format!(
                "{s:?} is not a listen address: use an IP address and a port (`127.0.0.1:4317`, `[::1]:8686`)"
            )
        })
    }

    /// Whether only this host can connect (a loopback address).
    pub fn is_loopback(&self) -> bool {
        self.0.ip().is_loopback()
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ListenAddress, D::Error> {
        let s = String::deserialize(d)?;
        ListenAddress::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for ListenAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(alias = "d_secs")]
        d: Duration,
    }

    fn d(toml_value: &str) -> Result<std::time::Duration, String> {
        toml::from_str::<T>(&format!("d = {toml_value}"))
            .map(|t| t.d.get())
            .map_err(|e| e.message().to_owned())
    }

    #[derive(Debug, Deserialize)]
    struct Legacy {
        #[serde(default)]
        wait: Option<Duration>,
        #[serde(default, deserialize_with = "legacy_millis")]
        wait_ms: Option<Duration>,
    }

    #[test]
    fn old_millisecond_fields_keep_their_unit() {
        let get = |t: &str| {
            let l: Legacy = toml::from_str(t).unwrap();
            either("wait", l.wait, "wait_ms", l.wait_ms, Duration::from_secs(9)).map(|d| d.get())
        };
        let ms = std::time::Duration::from_millis;
        assert_eq!(get("wait_ms = 250"), Ok(ms(250)));
        assert_eq!(get("wait = 2"), Ok(ms(2000)));
        assert_eq!(get("wait = \"250ms\""), Ok(ms(250)));
        assert_eq!(get(""), Ok(ms(9000)));
        let both = get("wait = 1\nwait_ms = 5").unwrap_err();
        assert!(both.contains("`wait` and `wait_ms`"), "{both}");
        assert!(toml::from_str::<Legacy>("wait_ms = \"1s\"").is_err(), "the old field takes a number");
    }

    #[test]
    fn durations_take_units_or_plain_seconds() {
        let s = std::time::Duration::from_secs;
        assert_eq!(d("\"5m\""), Ok(s(300)));
        assert_eq!(d("\"30s\""), Ok(s(30)));
        assert_eq!(d("300"), Ok(s(300)));
        assert_eq!(d("\"300\""), Ok(s(300)));
        assert_eq!(d("0.25"), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(d("\"250ms\""), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(d("\"2d\""), Ok(s(172_800)));
        assert_eq!(toml::from_str::<T>("d_secs = 7").unwrap().d.get(), s(7), "old field name");
        assert!(d("\"soon\"").unwrap_err().contains("\"soon\" is not a duration"));
        assert!(d("-1").unwrap_err().contains("negative"));
        assert!(d("\"3w\"").is_err());
        assert!(d("true").is_err());
    }

    #[test]
    fn durations_print_in_their_shortest_form_and_round_trip() {
        for (v, want) in [(250, "250ms"), (30_000, "30s"), (300_000, "5m"), (3_600_000, "1h"), (0, "0ms")] {
            let x = Duration::from_millis(v);
            assert_eq!(x.to_string(), want);
            assert_eq!(Duration::parse(want), Ok(x));
        }
    }

    #[test]
    fn the_command_line_form_needs_a_unit() {
        assert_eq!(parse_duration("5m"), Some(std::time::Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Some(std::time::Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("3w"), None);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(ListenAddress::parse("127.0.0.1:4317").unwrap().to_string(), "127.0.0.1:4317");
        assert!(ListenAddress::parse("[::1]:8686").unwrap().is_loopback());
        assert!(!ListenAddress::parse("0.0.0.0:1").unwrap().is_loopback());
        assert!(ListenAddress::parse("localhost:80").unwrap_err().contains("not a listen address"));
        assert!(ListenAddress::parse("127.0.0.1").is_err());
    }
}
