//! Whether a listener or a client would put data on the network in plain text. Components
//! call these at build time so that `sealtrail validate` refuses an exposed configuration
//! unless the operator opted in with `allow_plaintext = true`.

use std::net::{IpAddr, SocketAddr};

/// `true` when `addr` is reachable only from this host.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// `true` when a URL's host (`127.0.0.1`, `[::1]`, `localhost`) names this host only.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
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
        assert!(is_loopback_host("[::1]") && is_loopback_host("LocalHost") && is_loopback_host("127.0.0.2"));
        assert!(!is_loopback_host("collector") && !is_loopback_host("10.0.0.1"));
    }
}
