//! The egress policy: where a request whose target a tenant chose may go. Webhook tools,
//! completion callbacks and the `http_request` tool all send through [`EgressPolicy::client`]
//! and check their URL with [`EgressPolicy::check_url`]; vendor base URLs are the
//! operator's configuration and stay outside it.
//!
//! Refused by default: loopback, RFC 1918 private ranges, link-local (cloud metadata
//! endpoints such as 169.254.169.254 and fd00:ec2::254 included), CGNAT 100.64/10, unique
//! local fc00::/7, multicast, unspecified, broadcast and reserved ranges, and the IPv4-mapped,
//! IPv4-compatible, NAT64 and 6to4 forms of any of those. `EGRESS_ALLOW_CIDRS` opens ranges
//! explicitly (an allowed range wins over every rule).
//!
//! The check runs twice: on an IP literal in the URL (at save time, so a tenant hears 422
//! at once, and again before sending), and on **every address a name resolves to, at
//! connect time** (a DNS resolver of our own inside the client), so a public name that
//! points at 127.0.0.1, or one that changes its answer after the save (DNS rebinding),
//! is refused too. The client follows no redirects and uses no proxy (a proxy would
//! resolve names itself, past the check).

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::telemetry::metrics as m;

/// Why a target was refused; also the `reason` label of `egress_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an absolute `http` or `https` URL with a host.
    Scheme,
    Loopback,
    /// RFC 1918 (and the deprecated IPv6 site-local range).
    Private,
    /// 169.254/16, fe80::/10: includes the cloud metadata endpoints.
    LinkLocal,
    /// 100.64/10, carrier-grade NAT.
    SharedAddress,
    /// fc00::/7.
    UniqueLocal,
    Multicast,
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// Broadcast, 240/4, benchmarking, documentation and protocol-assignment ranges.
    Reserved,
    /// The name resolved to no address at all.
    Unresolvable,
}

impl Refusal {
    /// Every reason, for exporting each series from start.
    pub const ALL: [Refusal; 10] = [
        Refusal::Scheme,
        Refusal::Loopback,
        Refusal::Private,
        Refusal::LinkLocal,
        Refusal::SharedAddress,
        Refusal::UniqueLocal,
        Refusal::Multicast,
        Refusal::Unspecified,
        Refusal::Reserved,
        Refusal::Unresolvable,
    ];

    /// The label value and the word used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Scheme => "scheme",
            Refusal::Loopback => "loopback",
            Refusal::Private => "private",
            Refusal::LinkLocal => "link_local",
            Refusal::SharedAddress => "shared_address",
            Refusal::UniqueLocal => "unique_local",
            Refusal::Multicast => "multicast",
            Refusal::Unspecified => "unspecified",
            Refusal::Reserved => "reserved",
            Refusal::Unresolvable => "unresolvable",
        }
    }

    /// A sentence for the tenant (an API error or a tool result).
    pub fn message(self) -> String {
        match self {
            Refusal::Scheme => "must be an absolute http or https URL".into(),
            Refusal::Unresolvable => "the host name does not resolve".into(),
            r => format!(
                "the target is a {} address, which the egress policy refuses \
                 (an operator can allow it with EGRESS_ALLOW_CIDRS)",
                r.as_str().replace('_', "-")
            ),
        }
    }
}

/// Exports `egress_refused_total` at 0 for every reason, so a scrape (and an alert's
/// `increase()`) sees the series before the first refusal.
pub fn export_metrics() {
    for r in Refusal::ALL {
        metrics::counter!(m::EGRESS_REFUSED_TOTAL, "reason" => r.as_str()).increment(0);
    }
}

/// The error the client's resolver returns for a refused name; found again in a
/// request error's source chain by [`refusal_of`].
#[derive(Debug)]
pub struct Refused {
    pub reason: Refusal,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused by the egress policy: {}", self.reason.message())
    }
}

impl StdError for Refused {}

/// The refusal behind a failed request, if the egress policy is why it failed.
pub fn refusal_of(e: &(dyn StdError + 'static)) -> Option<Refusal> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r.reason);
        }
        cur = err.source();
    }
    None
}

/// The ranges tenants' requests may reach besides the public internet.
#[derive(Clone, Debug, Default)]
pub struct EgressPolicy {
    allow: Vec<IpNet>,
}

impl EgressPolicy {
    /// A policy that also allows `allow` (from `EGRESS_ALLOW_CIDRS`).
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let v4 = embedded_v4(ip).map(IpAddr::V4);
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || v4.is_some_and(|v| net.contains(&v)))
    }

    /// Whether a request may connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        match classify(ip) {
            Some(r) if !self.allowed(ip) => Err(r),
            _ => Ok(()),
        }
    }

    /// Whether `url` may be requested: http(s) with a host, and an IP literal host must
    /// pass [`check_ip`](Self::check_ip). A name is checked when the client resolves it.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme);
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) if !d.is_empty() => Ok(()),
            _ => Err(Refusal::Scheme),
        }
    }

    /// Counts and logs a refusal (host only: a URL may carry credentials).
    pub fn refused(&self, host: &str, reason: Refusal) {
        metrics::counter!(m::EGRESS_REFUSED_TOTAL, "reason" => reason.as_str()).increment(1);
        tracing::warn!(host, reason = reason.as_str(), "egress refused");
    }

    /// [`check_url`](Self::check_url), counting and logging a refusal.
    pub fn check_request(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        self.check_url(url).inspect_err(|r| {
            self.refused(url.host_str().unwrap_or_default(), *r);
        })
    }

    /// The client for tenant-chosen targets: every name resolved through the policy, no
    /// redirects, no proxy. It fails only when the TLS backend cannot start; there is no
    /// fallback client, since any other client would send requests unchecked.
    pub fn client(self: &Arc<Self>, connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(connect_timeout)
            .dns_resolver(Arc::new(PolicyResolver(self.clone())))
            .build()
    }
}

/// Resolves names with the system resolver and keeps only the addresses the policy
/// allows; none left is a refusal.
struct PolicyResolver(Arc<EgressPolicy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        first_refusal.get_or_insert(r);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let reason = first_refusal.unwrap_or(Refusal::Unresolvable);
                policy.refused(&host, reason);
                return Err(Box::new(Refused { reason }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The IPv4 address inside an IPv6 one (mapped, compatible, NAT64 well-known prefix,
/// 6to4), or the address itself when it is IPv4.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let tail =
                || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            if let Some(v4) = v6.to_ipv4_mapped() {
                Some(v4)
            } else if (s[..6] == [0, 0, 0, 0, 0, 0] && !matches!(s[6..], [0, 0] | [0, 1]))
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            {
                // ::a.b.c.d (deprecated IPv4-compatible), NAT64 well-known 64:ff9b::/96
                Some(tail())
            } else if s[0] == 0x2002 {
                // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
                Some(Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                ))
            } else {
                None
            }
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => Refusal::Unspecified,
        [127, ..] => Refusal::Loopback,
        [10, ..] | [192, 168, ..] => Refusal::Private,
        [172, b, ..] if (16..32).contains(&b) => Refusal::Private,
        [169, 254, ..] => Refusal::LinkLocal,
        [100, b, ..] if (64..128).contains(&b) => Refusal::SharedAddress,
        [a, ..] if (224..240).contains(&a) => Refusal::Multicast,
        [a, ..] if a >= 240 => Refusal::Reserved, // 240/4 and 255.255.255.255
        [192, 0, 0, _] | [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => Refusal::Reserved,
        [198, b, ..] if b == 18 || b == 19 => Refusal::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(Refusal::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Refusal::Loopback);
    }
    if let Some(v4) = embedded_v4(IpAddr::V6(ip)) {
        return classify_v4(v4);
    }
    Some(match s[0] {
        x if x & 0xffc0 == 0xfe80 => Refusal::LinkLocal,
        x if x & 0xffc0 == 0xfec0 => Refusal::Private, // deprecated site-local
        x if x & 0xfe00 == 0xfc00 => Refusal::UniqueLocal,
        x if x & 0xff00 == 0xff00 => Refusal::Multicast,
        // 64:ff9b:1::/48, NAT64 for local use; 100::/64 discard; 2001:db8::/32 documentation.
        0x64 if s[1] == 0xff9b && s[2] == 1 => Refusal::Private,
        0x100 if s[1..4] == [0, 0, 0] => Refusal::Reserved,
        0x2001 if s[1] == 0xdb8 => Refusal::Reserved,
        _ => return None,
    })
}

/// The rule that refuses `ip`, if any (before the allow-list).
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges_and_their_ipv6_forms_are_refused() {
        for (addr, want) in [
            ("127.0.0.1", Refusal::Loopback),
            ("127.255.0.9", Refusal::Loopback),
            ("::1", Refusal::Loopback),
            ("10.1.2.3", Refusal::Private),
            ("172.16.0.1", Refusal::Private),
            ("172.31.255.255", Refusal::Private),
            ("192.168.1.1", Refusal::Private),
            ("169.254.169.254", Refusal::LinkLocal),
            ("fe80::1", Refusal::LinkLocal),
            ("fd00:ec2::254", Refusal::UniqueLocal),
            ("fc00::1", Refusal::UniqueLocal),
            ("100.64.0.1", Refusal::SharedAddress),
            ("100.127.255.254", Refusal::SharedAddress),
            ("224.0.0.1", Refusal::Multicast),
            ("ff02::1", Refusal::Multicast),
            ("0.0.0.0", Refusal::Unspecified),
            ("::", Refusal::Unspecified),
            ("255.255.255.255", Refusal::Reserved),
            ("192.0.2.10", Refusal::Reserved),
            // The same internal targets in IPv6 clothing.
            ("::ffff:127.0.0.1", Refusal::Loopback),
            ("::ffff:169.254.169.254", Refusal::LinkLocal),
            ("::10.0.0.1", Refusal::Private),
            ("64:ff9b::7f00:1", Refusal::Loopback),
            ("64:ff9b::a9fe:a9fe", Refusal::LinkLocal),
            ("2002:c0a8:0101::1", Refusal::Private),
            ("64:ff9b:1::1", Refusal::Private),
        ] {
            assert_eq!(classify(ip(addr)), Some(want), "{addr}");
            assert_eq!(
                EgressPolicy::default().check_ip(ip(addr)),
                Err(want),
                "{addr}"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(classify(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn the_allow_list_opens_ranges_in_both_forms() {
        let p = EgressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]);
        assert_eq!(p.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check_ip(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(p.check_ip(ip("127.0.0.2")), Err(Refusal::Loopback));
        assert_eq!(p.check_ip(ip("10.0.0.1")), Err(Refusal::Private));
    }

    #[test]
    fn urls_are_checked_by_scheme_and_literal_host() {
        let p = EgressPolicy::default();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(p.check_url(&url("https://example.com/hook")), Ok(()));
        assert_eq!(p.check_url(&url("http://8.8.8.8:8080/")), Ok(()));
        assert_eq!(
            p.check_url(&url("http://169.254.169.254/latest/meta-data")),
            Err(Refusal::LinkLocal)
        );
        assert_eq!(
            p.check_url(&url("http://[::1]:9000/")),
            Err(Refusal::Loopback)
        );
        assert_eq!(
            p.check_url(&url("http://[::ffff:a00:1]/")),
            Err(Refusal::Private)
        );
        // Decimal and hex IPv4 spellings are normalised by the URL parser.
        assert_eq!(
            p.check_url(&url("http://2130706433/")),
            Err(Refusal::Loopback)
        );
        assert_eq!(p.check_url(&url("http://0x7f.1/")), Err(Refusal::Loopback));
        assert_eq!(
            p.check_url(&url("ftp://example.com/")),
            Err(Refusal::Scheme)
        );
        assert_eq!(
            p.check_url(&url("file:///etc/passwd")),
            Err(Refusal::Scheme)
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_connect_time() {
        let p = Arc::new(EgressPolicy::default());
        let client = p.client(Duration::from_secs(2)).unwrap();
        let err = client
            .get("http://localhost:9/never")
            .send()
            .await
            .unwrap_err();
        assert_eq!(refusal_of(&err), Some(Refusal::Loopback), "{err:?}");
    }
}
