//! Whether a listener or a client would put data on the network in plain text. Components
//! call these at build time so that `sealtrail validate` refuses an exposed configuration
//! unless the operator opted in with `allow_plaintext = true`.

use std::net::{IpAddr, SocketAddr};

/// `true` when `addr` is reachable only from this host.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// `true` for the wildcard addresses (`0.0.0.0`, `::`), which listen on every interface.
pub fn is_wildcard(ip: IpAddr) -> bool {
    ip.is_unspecified()
}

/// `true` when `url` starts with `http://` (any case): a client would send its headers
/// (credentials included) and its data unencrypted.
pub fn is_plain_http(url: &str) -> bool {
    url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses_and_urls() {
        assert!(is_loopback(&"127.0.0.1:1".parse().unwrap()));
        assert!(is_loopback(&"[::1]:1".parse().unwrap()));
        assert!(!is_loopback(&"0.0.0.0:1".parse().unwrap()));
        assert!(!is_loopback(&"10.1.2.3:1".parse().unwrap()));
        assert!(is_wildcard("0.0.0.0".parse().unwrap()));
        assert!(is_wildcard("::".parse().unwrap()));
        assert!(!is_wildcard("10.0.0.1".parse().unwrap()));
        assert!(is_plain_http("HTTP://collector:4318"));
        assert!(!is_plain_http("https://collector:4318"));
        assert!(!is_plain_http("http"));
    }
}
