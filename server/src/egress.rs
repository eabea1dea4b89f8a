//! Outbound calls: which addresses they may reach (the egress policy) and the one HTTP client
//! that enforces it. Every outbound HTTP request of the server (`builtin:http`, service steps,
//! the health poller, failure-alert webhooks) goes through an [`EgressClient`]; git fetches over
//! http(s) check their host with [`EgressPolicy::check_host`] first.
//!
//! - **Policy** ([`EgressPolicy`]): an address is refused when it is in a deny range, or when an
//!   allow list is set and it is in none of its ranges. The default deny list is link-local and
//!   cloud metadata (169.254.0.0/16, fe80::/10, fd00:ec2::254/128); `--egress-deny` replaces it
//!   (empty: nothing denied), `--egress-allow` adds an allow list. Addresses are normalized
//!   before matching: an IPv4-mapped IPv6 address (`::ffff:169.254.169.254`) is its IPv4
//!   address, and the unspecified addresses (`0.0.0.0`, `::`), which reach this host, count as
//!   loopback.
//! - **Connect time**: the client resolves host names with a resolver that drops refused
//!   addresses (all refused: an error naming the host and the policy), so the connection goes
//!   only to addresses that were checked; there is no second lookup to race. Hosts written as IP
//!   addresses are not resolved by reqwest, so [`EgressClient::request`] checks them before the
//!   request and the redirect policy before each hop.
//! - **No proxy**: the client never uses a proxy (not even `HTTP(S)_PROXY` from the
//!   environment): a proxy would connect on our behalf to addresses this policy never sees.
//! - **Redirects**: followed only to the same origin (scheme, host, port), at most
//!   [`MAX_REDIRECTS`]; a redirect elsewhere is not followed and the 3xx response is the
//!   answer, so request headers (credentials) never reach another origin.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;
use reqwest::{Method, RequestBuilder, Url, redirect};

/// Redirect hops followed at most (same-origin ones; others are never followed).
pub const MAX_REDIRECTS: usize = 10;

/// Link-local and cloud metadata: the instance metadata service of AWS, GCP, Azure and others
/// (169.254.169.254, AWS's fd00:ec2::254) hands out credentials to whoever asks from the host.
pub const DEFAULT_DENY: [&str; 3] = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"];

/// Which destination addresses outbound calls may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    deny: Vec<IpNet>,
    /// `Some`: only these (and still not `deny`).
    allow: Option<Vec<IpNet>>,
}

impl Default for EgressPolicy {
    /// The default deny list, no allow list.
    fn default() -> Self {
        EgressPolicy::new(None, None)
    }
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// In this deny range.
    Denied(IpNet),
    /// An allow list is set and the address is in none of its ranges.
    NotAllowed,
}

impl EgressPolicy {
    /// `deny`: `None` is the default list ([`DEFAULT_DENY`]); `allow`: `None` allows every
    /// address that is not denied.
    pub fn new(deny: Option<Vec<IpNet>>, allow: Option<Vec<IpNet>>) -> EgressPolicy {
        let deny = deny.unwrap_or_else(|| {
            DEFAULT_DENY
                .iter()
                .filter_map(|net| net.parse().ok())
                .collect()
        });
        EgressPolicy {
            deny: deny.into_iter().map(normalize_net).collect(),
            allow: allow.map(|nets| nets.into_iter().map(normalize_net).collect()),
        }
    }

    /// Whether outbound calls may connect to `ip`.
    pub fn decide(&self, ip: IpAddr) -> Result<(), Denial> {
        let ip = normalize(ip);
        if let Some(net) = self.deny.iter().find(|net| net.contains(&ip)) {
            return Err(Denial::Denied(*net));
        }
        match &self.allow {
            Some(allow) if !allow.iter().any(|net| net.contains(&ip)) => Err(Denial::NotAllowed),
            _ => Ok(()),
        }
    }

    /// The addresses of `host` that may be reached, in their order; an error when addresses
    /// were given and every one of them is refused.
    pub fn admit(
        &self,
        host: &str,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Vec<IpAddr>, Refused> {
        let mut admitted = Vec::new();
        let mut refused = Vec::new();
        for ip in addresses {
            match self.decide(ip) {
                Ok(()) => admitted.push(ip),
                Err(denial) => refused.push(explain(ip, denial)),
            }
        }
        if admitted.is_empty() && !refused.is_empty() {
            return Err(Refused::new(
                host,
                format!(
                    "every address it resolves to is refused ({})",
                    refused.join("; ")
                ),
            ));
        }
        Ok(admitted)
    }

    /// Refuses a URL whose host is a refused IP address (host names are checked when they are
    /// resolved). URLs without a host pass: they cannot be sent.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        self.check_ip(&ip.to_string(), ip)
    }

    /// Refuses `ip`, reached as `host`.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        self.decide(ip)
            .map_err(|denial| Refused::new(host, explain(ip, denial)))
    }

    /// For fetchers that resolve names themselves (libgit2): refuses `host` when any of its
    /// addresses is refused, since such a fetcher may connect to any of them.
    pub fn check_host(
        &self,
        host: &str,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), Refused> {
        for ip in addresses {
            if let Err(denial) = self.decide(ip) {
                return Err(Refused::new(host, explain(ip, denial)));
            }
        }
        Ok(())
    }
}

impl fmt::Display for EgressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |nets: &[IpNet]| {
            if nets.is_empty() {
                "nothing".to_string()
            } else {
                nets.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        write!(f, "deny {}", list(&self.deny))?;
        if let Some(allow) = &self.allow {
            write!(f, "; allow only {}", list(allow))?;
        }
        Ok(())
    }
}

fn explain(ip: IpAddr, denial: Denial) -> String {
    match denial {
        Denial::Denied(net) => format!("{ip} is in the denied range {net}"),
        Denial::NotAllowed => format!("{ip} is not in the allowed list"),
    }
}

/// The address a connection to `ip` really reaches: IPv4-mapped IPv6 addresses are IPv4, and
/// the unspecified addresses (which connect to this host) are loopback.
pub fn normalize(ip: IpAddr) -> IpAddr {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// A range written in IPv4-mapped form (`::ffff:169.254.0.0/112`) is that IPv4 range, so it
/// matches the normalized addresses; host bits are cleared.
fn normalize_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(mapped) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(mapped.trunc());
    }
    net.trunc()
}

/// A comma-separated list of ranges (`10.0.0.0/8`) and addresses (`10.0.0.1`, `fd00::1`), as
/// `--egress-deny` and `--egress-allow` take it. Empty items are skipped.
pub fn parse_list(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    format!(
                        "'{item}' is neither an address nor a CIDR range (such as 10.0.0.0/8 or fd00::/8)"
                    )
                })
        })
        .collect()
}

/// An outbound call the egress policy refused. Its message names the host and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the egress policy refused {host}: {reason}")]
pub struct Refused {
    pub host: String,
    pub reason: String,
}

impl Refused {
    fn new(host: &str, reason: String) -> Refused {
        Refused {
            host: host.to_string(),
            reason,
        }
    }

    /// The refusal somewhere in `error`'s chain of causes (reqwest wraps the resolver's error).
    pub fn find<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e Refused> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(refused) = e.downcast_ref::<Refused>() {
                return Some(refused);
            }
            current = e.source();
        }
        None
    }
}

/// What a client does with redirects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// Follow those to the same origin (at most [`MAX_REDIRECTS`]); others are the answer.
    SameOrigin,
    /// Never follow: every 3xx is the answer (alert webhooks).
    None,
}

/// What to do with a redirect from the chain `previous` (the original URL first) to `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    Follow,
    /// Not followed: the 3xx response is the answer.
    Stop,
    TooMany,
    Refused(Refused),
}

/// Same-origin redirects only, at most [`MAX_REDIRECTS`], each hop checked against `policy`.
pub fn redirect_hop(policy: &EgressPolicy, previous: &[Url], next: &Url) -> Hop {
    let Some(first) = previous.first() else {
        return Hop::Stop;
    };
    if first.origin() != next.origin() {
        return Hop::Stop;
    }
    if previous.len() > MAX_REDIRECTS {
        return Hop::TooMany;
    }
    match policy.check_url(next) {
        Ok(()) => Hop::Follow,
        Err(refused) => Hop::Refused(refused),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_REDIRECTS} redirects")]
struct TooManyRedirects;

/// Resolves host names with the system resolver and drops the addresses the policy refuses.
struct PolicyResolver(Arc<EgressPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str();
            let found: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect();
            let admitted = policy.admit(host, found)?;
            if admitted.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            let addrs: reqwest::dns::Addrs =
                Box::new(admitted.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The HTTP client of every outbound call: reqwest, built by [`EgressClient::build`] with the
/// policy's resolver, no proxy and the redirect rule, and a request method that checks
/// IP-address hosts first. There is no other way to get at the inner client.
#[derive(Clone)]
pub struct EgressClient {
    http: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl EgressClient {
    /// The one place an outbound HTTP client is built.
    pub fn build(policy: Arc<EgressPolicy>, redirects: Redirects) -> anyhow::Result<EgressClient> {
        let redirect = match redirects {
            Redirects::None => redirect::Policy::none(),
            Redirects::SameOrigin => {
                let policy = policy.clone();
                redirect::Policy::custom(move |attempt| {
                    match redirect_hop(&policy, attempt.previous(), attempt.url()) {
                        Hop::Follow => attempt.follow(),
                        Hop::Stop => attempt.stop(),
                        Hop::TooMany => attempt.error(TooManyRedirects),
                        Hop::Refused(refused) => attempt.error(refused),
                    }
                })
            }
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            // A proxy would connect for us to addresses the policy never sees.
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(policy.clone())))
            .redirect(redirect)
            .build()
            .map_err(|e| anyhow::anyhow!("building the outbound HTTP client: {e}"))?;
        Ok(EgressClient { http, policy })
    }

    /// A request to `url`; refused at once when its host is a refused IP address.
    pub fn request(&self, method: Method, url: Url) -> Result<RequestBuilder, Refused> {
        self.policy.check_url(&url)?;
        Ok(self.http.request(method, url))
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }
}

/// Reads at most `limit` bytes of the body while it streams in; the rest is never read (the
/// connection is dropped with the response). `true`: the body was longer.
pub async fn read_capped(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok((bytes, true));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(text: &str) -> Vec<IpNet> {
        parse_list(text).unwrap()
    }

    #[test]
    fn default_denies_link_local_and_metadata_only() {
        let p = EgressPolicy::default();
        for denied in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::ffff:a9fe:a9fe",
        ] {
            assert!(p.decide(ip(denied)).is_err(), "{denied}");
        }
        for allowed in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "192.168.1.1",
            "93.184.215.14",
            "fd00:ec2::253",
            "2001:db8::1",
            "169.253.255.255",
            "169.255.0.0",
        ] {
            assert_eq!(p.decide(ip(allowed)), Ok(()), "{allowed}");
        }
        assert_eq!(
            p.decide(ip("169.254.169.254")),
            Err(Denial::Denied("169.254.0.0/16".parse().unwrap()))
        );
    }

    #[test]
    fn a_given_deny_list_replaces_the_default_and_empty_denies_nothing() {
        let p = EgressPolicy::new(Some(nets("10.0.0.0/8, 127.0.0.1")), None);
        assert!(p.decide(ip("10.1.2.3")).is_err());
        assert!(p.decide(ip("127.0.0.1")).is_err());
        assert_eq!(p.decide(ip("127.0.0.2")), Ok(()));
        assert_eq!(p.decide(ip("169.254.169.254")), Ok(()));
        let open = EgressPolicy::new(Some(nets("")), None);
        assert_eq!(open.decide(ip("169.254.169.254")), Ok(()));
        assert_eq!(open.decide(ip("fe80::1")), Ok(()));
    }

    #[test]
    fn allow_list_admits_only_its_ranges_and_deny_still_applies() {
        let p = EgressPolicy::new(None, Some(nets("10.0.0.0/8,169.254.0.0/16,fd00::/8")));
        assert_eq!(p.decide(ip("10.9.9.9")), Ok(()));
        assert_eq!(p.decide(ip("fd12::1")), Ok(()));
        assert_eq!(p.decide(ip("127.0.0.1")), Err(Denial::NotAllowed));
        assert_eq!(p.decide(ip("8.8.8.8")), Err(Denial::NotAllowed));
        // Allowed, but denied by default.
        assert!(matches!(
            p.decide(ip("169.254.169.254")),
            Err(Denial::Denied(_))
        ));
        assert!(matches!(
            p.decide(ip("fd00:ec2::254")),
            Err(Denial::Denied(_))
        ));
    }

    #[test]
    fn mapped_and_unspecified_addresses_are_matched_as_what_they_reach() {
        let p = EgressPolicy::new(Some(nets("127.0.0.0/8,::1")), None);
        for denied in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "::",
            "::1",
            "::ffff:0.0.0.0",
        ] {
            assert!(p.decide(ip(denied)).is_err(), "{denied}");
        }
        // A deny range written in mapped form matches the IPv4 addresses.
        let mapped = EgressPolicy::new(Some(nets("::ffff:10.0.0.0/104")), None);
        assert!(mapped.decide(ip("10.1.2.3")).is_err());
        assert!(mapped.decide(ip("::ffff:10.1.2.3")).is_err());
        assert_eq!(mapped.decide(ip("11.0.0.1")), Ok(()));
        // An allow list sees normalized addresses too.
        let allow = EgressPolicy::new(Some(vec![]), Some(nets("10.0.0.0/8")));
        assert_eq!(allow.decide(ip("::ffff:10.0.0.1")), Ok(()));
        assert_eq!(normalize(ip("::1")), ip("::1"));
        assert_eq!(normalize(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
    }

    #[test]
    fn lists_parse_ranges_and_addresses_or_say_what_is_wrong() {
        assert_eq!(
            nets(" 10.0.0.0/8 ,fd00::1, 192.168.1.7/24,,"),
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "fd00::1/128".parse().unwrap(),
                "192.168.1.0/24".parse().unwrap(),
            ]
        );
        assert_eq!(nets(""), vec![]);
        let err = parse_list("10.0.0.0/8,example.com").unwrap_err();
        assert!(err.contains("'example.com'"), "{err}");
        assert!(parse_list("10.0.0.0/33").is_err());
    }

    #[test]
    fn resolved_addresses_are_filtered_and_all_refused_names_the_host() {
        let p = EgressPolicy::new(Some(nets("127.0.0.0/8")), None);
        assert_eq!(
            p.admit("mixed.test", [ip("127.0.0.1"), ip("10.0.0.1")]),
            Ok(vec![ip("10.0.0.1")])
        );
        let err = p
            .admit("localhost", [ip("127.0.0.1"), ip("::ffff:127.0.0.2")])
            .unwrap_err();
        assert_eq!(err.host, "localhost");
        let text = err.to_string();
        assert!(
            text.starts_with("the egress policy refused localhost: every address"),
            "{text}"
        );
        assert!(text.contains("127.0.0.1 is in the denied range 127.0.0.0/8"));
        assert_eq!(p.admit("none.test", []), Ok(vec![]));
        // A fetcher that resolves by itself: one refused address refuses the host.
        assert!(
            p.check_host("mixed.test", [ip("10.0.0.1"), ip("127.0.0.1")])
                .is_err()
        );
        assert_eq!(p.check_host("ok.test", [ip("10.0.0.1")]), Ok(()));
    }

    #[test]
    fn ip_literal_urls_are_checked_in_every_spelling() {
        let p = EgressPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://169.254.169.254./",
            "http://[::ffff:169.254.169.254]/",
            "https://[fd00:ec2::254]:8443/",
            "http://[fe80::1]/",
        ] {
            let err = p.check_url(&Url::parse(url).unwrap()).unwrap_err();
            assert!(
                err.to_string().starts_with("the egress policy refused "),
                "{url}: {err}"
            );
        }
        for url in [
            "http://127.0.0.1:8080/",
            "http://metadata.test/",
            "http://[::1]/",
        ] {
            assert_eq!(p.check_url(&Url::parse(url).unwrap()), Ok(()), "{url}");
        }
    }

    #[test]
    fn redirects_follow_only_the_same_origin_and_at_most_ten() {
        let p = EgressPolicy::default();
        let u = |s: &str| Url::parse(s).unwrap();
        let first = [u("http://127.0.0.1:8080/a?token=1")];
        assert_eq!(
            redirect_hop(&p, &first, &u("http://127.0.0.1:8080/b")),
            Hop::Follow
        );
        for other in [
            "http://127.0.0.1:8081/a",
            "https://127.0.0.1:8080/a",
            "http://localhost:8080/a",
            "http://169.254.169.254/",
        ] {
            assert_eq!(redirect_hop(&p, &first, &u(other)), Hop::Stop, "{other}");
        }
        // The default port is the same origin as the explicit one.
        assert_eq!(
            redirect_hop(&p, &[u("http://h.test/")], &u("http://h.test:80/x")),
            Hop::Follow
        );
        let chain: Vec<Url> = (0..=MAX_REDIRECTS)
            .map(|i| u(&format!("http://h.test/{i}")))
            .collect();
        assert_eq!(
            redirect_hop(&p, &chain[..MAX_REDIRECTS], &u("http://h.test/x")),
            Hop::Follow
        );
        assert_eq!(
            redirect_hop(&p, &chain, &u("http://h.test/x")),
            Hop::TooMany
        );
        // A denied origin is refused on every hop, not only the first.
        let denied = [u("http://169.254.169.254/")];
        assert!(matches!(
            redirect_hop(&p, &denied, &u("http://169.254.169.254/x")),
            Hop::Refused(_)
        ));
    }

    #[test]
    fn policy_reads_as_its_lists() {
        assert_eq!(
            EgressPolicy::default().to_string(),
            "deny 169.254.0.0/16, fe80::/10, fd00:ec2::254/128"
        );
        assert_eq!(
            EgressPolicy::new(Some(vec![]), Some(nets("10.0.0.0/8"))).to_string(),
            "deny nothing; allow only 10.0.0.0/8"
        );
    }

    // ---- the client against real local servers ----

    use axum::{
        Router,
        http::{HeaderMap, StatusCode, header::LOCATION},
        response::IntoResponse,
        routing::get,
    };
    use std::sync::Mutex;

    /// Serves `app` on 127.0.0.1 and returns its base URL.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        base
    }

    fn client(policy: EgressPolicy) -> EgressClient {
        EgressClient::build(Arc::new(policy), Redirects::SameOrigin).unwrap()
    }

    async fn send(client: &EgressClient, url: &str) -> Result<reqwest::Response, String> {
        let request = client
            .request(Method::GET, Url::parse(url).unwrap())
            .map_err(|e| e.to_string())?;
        request.send().await.map_err(|e| {
            Refused::find(&e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.to_string())
        })
    }

    #[tokio::test]
    async fn a_host_name_resolving_only_to_denied_addresses_is_refused_at_connect_time() {
        let hits = Arc::new(Mutex::new(0));
        let counter = hits.clone();
        let base = serve(Router::new().route(
            "/",
            get(move || {
                *counter.lock().unwrap() += 1;
                async { "reached" }
            }),
        ))
        .await;
        let port = base.rsplit(':').next().unwrap();
        let c = client(EgressPolicy::new(Some(nets("127.0.0.0/8,::1")), None));
        let err = send(&c, &format!("http://localhost:{port}/"))
            .await
            .unwrap_err();
        assert!(
            err.starts_with("the egress policy refused localhost: every address"),
            "{err}"
        );
        let err = send(&c, &format!("{base}/")).await.unwrap_err();
        assert!(
            err.starts_with("the egress policy refused 127.0.0.1: 127.0.0.1 is in"),
            "{err}"
        );
        assert_eq!(*hits.lock().unwrap(), 0);
        // The default policy lets loopback through.
        let ok = send(&client(EgressPolicy::default()), &format!("{base}/"))
            .await
            .unwrap();
        assert_eq!(ok.text().await.unwrap(), "reached");
        assert_eq!(*hits.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn redirects_stop_at_the_origin_and_loops_end() {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = seen.clone();
        let other = serve(Router::new().route(
            "/catch",
            get(move |headers: HeaderMap| {
                record
                    .lock()
                    .unwrap()
                    .push(format!("{:?}", headers.get("x-api-key")));
                async { "caught" }
            }),
        ))
        .await;
        let away = format!("{other}/catch");
        let base = serve(
            Router::new()
                .route(
                    "/away",
                    get(move || async move { (StatusCode::FOUND, [(LOCATION, away)]) }),
                )
                .route(
                    "/old",
                    get(|| async { (StatusCode::TEMPORARY_REDIRECT, [(LOCATION, "/new")]) }),
                )
                .route(
                    "/new",
                    get(|headers: HeaderMap| async move {
                        format!("new {:?}", headers.get("x-api-key"))
                    }),
                )
                .route(
                    "/loop",
                    get(|| async { (StatusCode::FOUND, [(LOCATION, "/loop")]).into_response() }),
                ),
        )
        .await;
        let c = client(EgressPolicy::default());
        let with_key = |path: &str| {
            c.request(Method::GET, Url::parse(&format!("{base}{path}")).unwrap())
                .unwrap()
                .header("x-api-key", "k3y")
                .send()
        };
        let res = with_key("/away").await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert!(seen.lock().unwrap().is_empty());
        let res = with_key("/old").await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.text().await.unwrap(), "new Some(\"k3y\")");
        let err = with_key("/loop").await.unwrap_err();
        assert!(err.is_redirect(), "{err}");
        assert!(seen.lock().unwrap().is_empty());
    }
}
