//! Where a webhook may be sent (server-side request forgery rules): which destinations are
//! refused — loopback, private, link-local, cloud metadata, unspecified, broadcast, shared
//! (CGNAT), multicast and reserved addresses, and the names `localhost` and the metadata hosts —
//! and the operator's allow-list (`SETTLE_WEBHOOK_ALLOW`) that can permit them. The admin route
//! checks the host as written; the deliverer checks every address the host resolves to at each
//! attempt (DNS can change between the two). Pure: `core::net` addresses are plain values.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::enterprise::WebhookUrlError;

/// Why a destination is not allowed (unless the allow-list names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DestinationRefusal {
    #[error("a loopback address")]
    Loopback,
    #[error("a private network address")]
    Private,
    #[error("a link-local address")]
    LinkLocal,
    #[error("a cloud metadata endpoint")]
    Metadata,
    #[error("the unspecified address")]
    Unspecified,
    #[error("the broadcast address")]
    Broadcast,
    #[error("a shared (carrier-grade NAT) address")]
    SharedAddressSpace,
    #[error("a multicast address")]
    Multicast,
    #[error("a reserved address")]
    Reserved,
}

impl DestinationRefusal {
    /// A stable name for logs and error details.
    pub fn code(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link_local",
            Self::Metadata => "metadata",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::SharedAddressSpace => "shared_address_space",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
        }
    }
}

/// Host names refused as such, whatever they resolve to: the loopback name and the cloud
/// metadata services' names. Subdomains of `localhost` are loopback too (RFC 6761).
const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];
/// The AWS, GCP and Azure instance metadata address.
const METADATA_V4: [u8; 4] = [169, 254, 169, 254];
/// The AWS instance metadata address over IPv6.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// The class of an address a webhook may not be sent to; `None` for a public address.
pub fn classify_address(ip: IpAddr) -> Option<DestinationRefusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<DestinationRefusal> {
    use DestinationRefusal::*;
    let table: &[([u8; 4], u32, DestinationRefusal)] = &[
        (METADATA_V4, 32, Metadata),
        ([255, 255, 255, 255], 32, Broadcast),
        ([0, 0, 0, 0], 8, Unspecified),
        ([127, 0, 0, 0], 8, Loopback),
        ([10, 0, 0, 0], 8, Private),
        ([172, 16, 0, 0], 12, Private),
        ([192, 168, 0, 0], 16, Private),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([100, 64, 0, 0], 10, SharedAddressSpace),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
        ([192, 0, 0, 0], 24, Reserved),
        ([198, 18, 0, 0], 15, Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The IPv4 address an IPv6 address carries and routes to, if any: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
/// (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if bits >> 32 == 0 && bits > 1 {
        return Some(low);
    }
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return Some(low);
    }
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

fn classify_v6(ip: Ipv6Addr) -> Option<DestinationRefusal> {
    use DestinationRefusal::*;
    if ip == METADATA_V6 {
        return Some(Metadata);
    }
    if ip == Ipv6Addr::UNSPECIFIED {
        return Some(Unspecified);
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Some(Loopback);
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let net = |a: u16, b: u16| Ipv6Addr::new(a, b, 0, 0, 0, 0, 0, 0);
    let table: &[(Ipv6Addr, u32, DestinationRefusal)] = &[
        (net(0xfc00, 0), 7, Private),
        (net(0xfec0, 0), 10, Private),
        (net(0xfe80, 0), 10, LinkLocal),
        (net(0xff00, 0), 8, Multicast),
        (net(0x0100, 0), 64, Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

/// The class of a host name a webhook may not be sent to, whatever it resolves to; `None` when
/// only its addresses can tell. `name` is lower case without a trailing dot.
pub fn classify_name(name: &str) -> Option<DestinationRefusal> {
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(DestinationRefusal::Loopback);
    }
    METADATA_NAMES
        .contains(&name)
        .then_some(DestinationRefusal::Metadata)
}

/// A webhook URL's host, as an HTTP client will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookHost {
    /// A name, lower case, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl WebhookHost {
    /// Reads a host as the WHATWG URL standard does (what `reqwest`'s URL parser does): a name
    /// whose last label is a number is an IPv4 address in any of its spellings (`127.1`,
    /// `0x7f.0.0.1`, `2130706433`, `0177.0.0.1`), and one that is not a valid address is refused.
    pub fn parse(host: &str) -> Result<Self, WebhookUrlError> {
        if let Some(inside) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return inside
                .parse::<Ipv6Addr>()
                .map(|ip| Self::Ip(IpAddr::V6(ip)))
                .map_err(|_| WebhookUrlError::BadHost);
        }
        let name = host.to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name).to_owned();
        if name.is_empty() {
            return Err(WebhookUrlError::NoHost);
        }
        if ends_in_a_number(&name) {
            return whatwg_ipv4(&name)
                .map(|ip| Self::Ip(IpAddr::V4(ip)))
                .ok_or(WebhookUrlError::BadHost);
        }
        Ok(Self::Name(name))
    }

    /// The host of a URL that `parse_webhook_url` accepted.
    pub fn of_url(url: &str) -> Result<Self, WebhookUrlError> {
        let rest = url
            .split_once("://")
            .map(|(_, rest)| rest)
            .ok_or(WebhookUrlError::NotHttp)?;
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let host = if authority.starts_with('[') {
            authority
                .find(']')
                .map(|end| &authority[..=end])
                .ok_or(WebhookUrlError::BadHost)?
        } else {
            authority.split(':').next().unwrap_or_default()
        };
        Self::parse(host)
    }
}

fn ipv4_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.bytes().all(|b| (b as char).is_digit(radix)) || digits.len() > 20 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

fn ends_in_a_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or_default();
    !last.is_empty() && (last.bytes().all(|b| b.is_ascii_digit()) || ipv4_number(last).is_some())
}

fn whatwg_ipv4(name: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let numbers: Vec<u64> = parts
        .iter()
        .map(|p| ipv4_number(p))
        .collect::<Option<_>>()?;
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|n| *n > 255) || *last >= 256u64.pow(5 - numbers.len() as u32) {
        return None;
    }
    let value = leading
        .iter()
        .enumerate()
        .fold(*last, |acc, (i, n)| acc + n * 256u64.pow(3 - i as u32));
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// One network of the allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u32,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, unmapped(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => in_v4(ip, net.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => in_v6(ip, net, self.prefix),
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What is wrong with one entry of the allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllowEntryProblem {
    #[error("not an IP address before the '/'")]
    BadAddress,
    #[error("the prefix length is not a number within the address's bits")]
    BadPrefix,
    #[error("not a valid host name, IP address or CIDR network")]
    BadName,
}

/// An allow-list entry that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("webhook allow-list entry {entry:?}: {problem}")]
pub struct AllowListError {
    pub entry: String,
    pub problem: AllowEntryProblem,
}

/// The destinations an operator permits although they would be refused: exact host names
/// (and whatever they resolve to) and IP networks (for IP literals and resolved addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookAllowList {
    names: Vec<String>,
    networks: Vec<Network>,
}

impl WebhookAllowList {
    /// Reads comma-separated entries: host names (`hooks.internal`), IP addresses (`10.0.0.7`,
    /// `::1`, `[::1]`) and CIDR networks (`10.1.0.0/16`, `fd00::/8`). Blank entries are skipped.
    pub fn parse(text: &str) -> Result<Self, AllowListError> {
        let mut list = Self::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let refuse = |problem| AllowListError {
                entry: entry.to_owned(),
                problem,
            };
            if let Some((addr, prefix)) = entry.split_once('/') {
                let addr = parse_ip(addr).ok_or_else(|| refuse(AllowEntryProblem::BadAddress))?;
                let bits = if addr.is_ipv4() { 32 } else { 128 };
                let prefix = prefix
                    .parse::<u32>()
                    .ok()
                    .filter(|p| *p <= bits && prefix.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| refuse(AllowEntryProblem::BadPrefix))?;
                list.networks.push(Network { addr, prefix });
            } else if let Some(addr) = parse_ip(entry) {
                let prefix = if addr.is_ipv4() { 32 } else { 128 };
                list.networks.push(Network { addr, prefix });
            } else {
                match WebhookHost::parse(entry) {
                    Ok(WebhookHost::Name(name)) if valid_name(&name) => list.names.push(name),
                    _ => return Err(refuse(AllowEntryProblem::BadName)),
                }
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.networks.is_empty()
    }

    /// Whether the operator named this host (lower case, no trailing dot).
    pub fn permits_name(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Whether an allowed network holds this address.
    pub fn permits_address(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The check of a URL's host as written (admin route and, before resolving, the
    /// deliverer): an IP literal by its class, a name by the names refused as such. A name's
    /// addresses are checked by `check_resolved` when it is resolved.
    pub fn check_host(&self, host: &WebhookHost) -> Result<(), DestinationRefusal> {
        match host {
            WebhookHost::Ip(ip) => self.check_address(*ip),
            WebhookHost::Name(name) if self.permits_name(name) => Ok(()),
            WebhookHost::Name(name) => classify_name(name).map_or(Ok(()), Err),
        }
    }

    /// The check of one address `name` resolved to: every address of a name must pass, or the
    /// delivery is not sent. A name the operator allowed passes with whatever it resolves to.
    pub fn check_resolved(&self, name: &str, ip: IpAddr) -> Result<(), DestinationRefusal> {
        if self.permits_name(name) {
            return Ok(());
        }
        self.check_address(ip)
    }

    fn check_address(&self, ip: IpAddr) -> Result<(), DestinationRefusal> {
        if self.permits_address(ip) {
            return Ok(());
        }
        classify_address(ip).map_or(Ok(()), Err)
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse().ok()
}

fn valid_name(name: &str) -> bool {
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use DestinationRefusal::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn classifies_addresses() {
        let cases: &[(&str, Option<DestinationRefusal>)] = &[
            ("93.184.216.34", None),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("255.255.255.255", Some(Broadcast)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("2606:4700::1111", None),
            ("::1", Some(Loopback)),
            ("::", Some(Unspecified)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fe80::1", Some(LinkLocal)),
            ("fd00:ec2::254", Some(Metadata)),
            ("ff02::1", Some(Multicast)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:8.8.8.8", None),
            ("::10.0.0.1", Some(Private)),
            ("64:ff9b::a00:1", Some(Private)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:0808:0808::", None),
        ];
        for (text, expected) in cases {
            assert_eq!(classify_address(ip(text)), *expected, "{text}");
        }
    }

    #[test]
    fn reads_hosts_as_http_clients_do() {
        let v4 = |a, b, c, d| Ok(WebhookHost::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d))));
        let cases: &[(&str, Result<WebhookHost, WebhookUrlError>)] = &[
            ("Example.COM.", Ok(WebhookHost::Name("example.com".into()))),
            ("127.0.0.1", v4(127, 0, 0, 1)),
            ("127.1", v4(127, 0, 0, 1)),
            ("2130706433", v4(127, 0, 0, 1)),
            ("0x7f.0.0.1", v4(127, 0, 0, 1)),
            ("0177.0.0.1", v4(127, 0, 0, 1)),
            ("0x7f000001", v4(127, 0, 0, 1)),
            ("10.0.0.1.", v4(10, 0, 0, 1)),
            ("[::1]", Ok(WebhookHost::Ip(ip("::1")))),
            ("256.0.0.1", Err(WebhookUrlError::BadHost)),
            ("1.2.3.4.5", Err(WebhookUrlError::BadHost)),
            ("08.0.0.1", Err(WebhookUrlError::BadHost)),
            ("hooks.1a", Ok(WebhookHost::Name("hooks.1a".into()))),
        ];
        for (host, expected) in cases {
            assert_eq!(WebhookHost::parse(host), *expected, "{host}");
        }
        assert_eq!(
            WebhookHost::of_url("http://127.1:8080/x?y"),
            v4(127, 0, 0, 1)
        );
        assert_eq!(
            WebhookHost::of_url("https://[fe80::1]:443/"),
            Ok(WebhookHost::Ip(ip("fe80::1")))
        );
        assert_eq!(
            WebhookHost::of_url("https://Hooks.Example.com?x=1"),
            Ok(WebhookHost::Name("hooks.example.com".into()))
        );
    }

    #[test]
    fn refuses_internal_names_and_literals_unless_allowed() {
        let none = WebhookAllowList::default();
        let host = |h: &str| WebhookHost::parse(h).expect("host");
        for (h, expected) in [
            ("hooks.example.com", Ok(())),
            ("localhost", Err(Loopback)),
            ("api.localhost", Err(Loopback)),
            ("metadata.google.internal", Err(Metadata)),
            ("127.0.0.1", Err(Loopback)),
            ("0x7f.1", Err(Loopback)),
            ("169.254.169.254", Err(Metadata)),
            ("[fd00:ec2::254]", Err(Metadata)),
            ("10.0.0.5", Err(Private)),
            ("93.184.216.34", Ok(())),
        ] {
            assert_eq!(none.check_host(&host(h)), expected, "{h}");
        }
        let allow = WebhookAllowList::parse(" 127.0.0.1, localhost ,10.1.0.0/16,[::1], fd00::/8,")
            .expect("allow-list");
        assert!(allow.check_host(&host("127.0.0.1")).is_ok());
        assert!(allow.check_host(&host("127.1")).is_ok());
        assert!(allow.check_host(&host("localhost")).is_ok());
        assert!(allow.check_host(&host("10.1.200.3")).is_ok());
        assert_eq!(allow.check_host(&host("10.2.0.1")), Err(Private));
        assert!(allow.check_host(&host("[::1]")).is_ok());
        assert!(allow.check_host(&host("[fd12::1]")).is_ok());
        assert_eq!(allow.check_host(&host("127.0.0.2")), Err(Loopback));
        assert_eq!(
            allow.check_host(&host("metadata.google.internal")),
            Err(Metadata)
        );
    }

    #[test]
    fn every_resolved_address_is_checked_unless_the_name_is_allowed() {
        let allow = WebhookAllowList::parse("hooks.corp,192.168.7.0/24").expect("allow-list");
        // DNS rebinding: a public name answering with an internal address is refused.
        assert_eq!(
            allow.check_resolved("evil.example", ip("127.0.0.1")),
            Err(Loopback)
        );
        assert_eq!(
            allow.check_resolved("evil.example", ip("::ffff:10.0.0.1")),
            Err(Private)
        );
        assert!(allow
            .check_resolved("evil.example", ip("93.184.216.34"))
            .is_ok());
        assert!(allow
            .check_resolved("evil.example", ip("192.168.7.9"))
            .is_ok());
        assert!(allow.check_resolved("hooks.corp", ip("10.9.9.9")).is_ok());
    }

    #[test]
    fn allow_list_entries_are_checked() {
        assert_eq!(WebhookAllowList::parse(""), Ok(WebhookAllowList::default()));
        assert!(WebhookAllowList::parse(" , ").expect("blank").is_empty());
        for (entry, problem) in [
            ("10.0.0.0/33", AllowEntryProblem::BadPrefix),
            ("10.0.0.0/-1", AllowEntryProblem::BadPrefix),
            ("::/129", AllowEntryProblem::BadPrefix),
            ("nonsense/8", AllowEntryProblem::BadAddress),
            ("bad host", AllowEntryProblem::BadName),
            ("-a.com", AllowEntryProblem::BadName),
            ("999.1.1.1", AllowEntryProblem::BadName),
        ] {
            assert_eq!(
                WebhookAllowList::parse(entry),
                Err(AllowListError {
                    entry: entry.into(),
                    problem
                }),
                "{entry}"
            );
        }
    }
}
