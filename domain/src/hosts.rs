//! Which `Host` a request may name (DNS rebinding, issue 14). Pure code: the HTTP layer
//! (`http::hosts`) asks `HostPolicy::allows` before any handler runs.
//!
//! A web page on `http://rebind.evil.test:3000` whose name is re-pointed at 127.0.0.1 talks to
//! this server as "same origin": the browser sends `Host: rebind.evil.test:3000` and
//! `Origin: http://rebind.evil.test:3000`, so an Origin check alone agrees. Only the Host
//! header tells: it names a host this server never answers to. Allowed are
//!
//! - loopback names and addresses: `localhost`, 127.0.0.0/8, `[::1]`;
//! - the bound IP address; when bound to an unspecified address (`0.0.0.0`, `::`), any IP
//!   literal: a page served from an IP address cannot be rebound (its origin is that address);
//! - the names given in `--allowed-hosts`, and the host of `--public-url`.
//!
//! Ports are ignored: the port is part of the origin the browser already isolates, and a
//! reverse proxy commonly forwards its own.
use std::net::{IpAddr, Ipv6Addr};

/// The host part of a `Host` header (or of an `--allowed-hosts` entry): a lower-case name
/// without a trailing dot, or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    Name(String),
    Ip(IpAddr),
}

impl HostName {
    /// Parses `host`, `host:port`, `1.2.3.4:port`, `[v6]` or `[v6]:port`. `None` for anything
    /// else (an empty host, a bad port, characters no DNS name has, userinfo, a path).
    pub fn parse(text: &str) -> Option<HostName> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let ip: Ipv6Addr = inside.parse().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            return valid_port(port).then_some(HostName::Ip(IpAddr::V6(ip)));
        } else {
            match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        if !valid_port(port) {
            return None;
        }
        if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            return Some(HostName::Ip(IpAddr::V4(ip)));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let labels_ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        labels_ok.then_some(HostName::Name(name))
    }

    fn is_loopback(&self) -> bool {
        match self {
            HostName::Name(n) => n == "localhost",
            HostName::Ip(ip) => ip.to_canonical().is_loopback(),
        }
    }
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostName::Name(n) => f.write_str(n),
            HostName::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            HostName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

fn valid_port(port: Option<&str>) -> bool {
    match port {
        None => true,
        Some(p) => !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// The hosts this server answers to (see the module docs).
#[derive(Debug, Clone)]
pub struct HostPolicy {
    bound: IpAddr,
    allowed: Vec<HostName>,
}

impl HostPolicy {
    /// `bound`: the listening address's IP; `allowed`: `--allowed-hosts` and the public URL's
    /// host.
    pub fn new(bound: IpAddr, allowed: Vec<HostName>) -> HostPolicy {
        HostPolicy { bound, allowed }
    }

    /// Whether a request naming this `Host` (header value) may reach a handler.
    pub fn allows(&self, host_header: &str) -> bool {
        let Some(host) = HostName::parse(host_header) else {
            return false;
        };
        if host.is_loopback() || self.allowed.contains(&host) {
            return true;
        }
        match host {
            HostName::Ip(ip) => {
                self.bound.is_unspecified() || ip.to_canonical() == self.bound.to_canonical()
            }
            HostName::Name(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> HostName {
        HostName::parse(n).unwrap()
    }

    #[test]
    fn parses_host_headers() {
        assert_eq!(
            name("Example.TEST:8080"),
            HostName::Name("example.test".into())
        );
        assert_eq!(name("example.test."), HostName::Name("example.test".into()));
        assert_eq!(name("127.0.0.1:3000"), HostName::Ip([127, 0, 0, 1].into()));
        assert_eq!(name("[::1]:3000"), HostName::Ip(Ipv6Addr::LOCALHOST.into()));
        assert_eq!(name("[::1]"), HostName::Ip(Ipv6Addr::LOCALHOST.into()));
        for bad in [
            "",
            ":3000",
            "a b",
            "user@host",
            "host/path",
            "host:",
            "host:port",
            "host:1:2",
            "::1",
            "[::1",
            "[::1]x",
            "[evil.test]",
            "a..b",
            "évil.test",
        ] {
            assert_eq!(HostName::parse(bad), None, "{bad:?}");
        }
        assert_eq!(name("[::1]:80").to_string(), "[::1]");
    }

    #[test]
    fn loopback_bound_and_listed_hosts_only() {
        let local = HostPolicy::new([127, 0, 0, 1].into(), vec![name("switchyard.example")]);
        for ok in [
            "localhost",
            "localhost:3000",
            "LOCALHOST.:1",
            "127.0.0.1:3000",
            "127.1.2.3",
            "[::1]:3000",
            "[::ffff:127.0.0.1]",
            "switchyard.example",
            "Switchyard.Example:443",
        ] {
            assert!(local.allows(ok), "{ok}");
        }
        for refused in [
            "rebind.evil.test:3000",
            "evil.localhost",
            "localhost.evil.test",
            "10.0.0.5:3000",
            "[fe80::1]",
            "",
            "127.0.0.1:3000, evil.test",
            "sub.switchyard.example",
        ] {
            assert!(!local.allows(refused), "{refused}");
        }
        // Bound to one address: that address too.
        let one = HostPolicy::new([192, 168, 1, 5].into(), vec![]);
        assert!(one.allows("192.168.1.5:3000"));
        assert!(!one.allows("192.168.1.6:3000"));
        assert!(!one.allows("nas.lan:3000"));
        // Bound to every address: any IP literal (it cannot be rebound), no names.
        let any = HostPolicy::new(Ipv6Addr::UNSPECIFIED.into(), vec![]);
        assert!(any.allows("10.1.2.3:3000"));
        assert!(any.allows("[2001:db8::1]:3000"));
        assert!(!any.allows("nas.lan:3000"));
    }
}
