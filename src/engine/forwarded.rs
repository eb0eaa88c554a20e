//! The client address behind a reverse proxy (`--trusted-proxy`): which
//! address of `X-Forwarded-For` to believe, and from whom.
//!
//! Every hop appends the address it received the request from, so the list
//! reads client, proxy1, proxy2, ... and only the right-most entries were
//! written by proxies we run; anything to their left may be forged by the
//! client. Walking from the right, the first address that is not one of our
//! proxies is the client. The header is believed only when the TCP peer
//! itself is a trusted proxy; from anyone else it is ignored.

use std::net::IpAddr;

/// One `--trusted-proxy` value: an address and a prefix length (32 or 128
/// for a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl TrustedProxy {
    /// True if `ip` is inside this network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`, what a dual-stack socket reports) is compared as
    /// the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix_len)
            }
            _ => false,
        }
    }
}

/// Parses `ADDR` or `ADDR/PREFIX` (IPv4 or IPv6). The error says what is
/// wrong, for the one-line "bad value" message (exit 2).
pub fn parse_trusted_proxy(value: &str) -> Result<TrustedProxy, String> {
    let value = value.trim();
    let (addr_text, prefix_text) = match value.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (value, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| format!("{value:?} is not an IP address or ADDR/PREFIX"))?;
    let addr = canonical(addr);
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix_len = match prefix_text {
        None => max,
        Some(text) => {
            let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
            match text.parse::<u8>() {
                Ok(len) if digits_only && len <= max => len,
                _ => return Err(format!("{value:?}: the prefix length must be 0 to {max}")),
            }
        }
    };
    Ok(TrustedProxy { addr, prefix_len })
}

/// The address to log for a connection from `peer` that carried the given
/// `X-Forwarded-For` header values (in the order they appeared; several
/// headers are one comma-separated list). `peer` itself unless it is a
/// trusted proxy; then the right-most listed address that is not trusted.
/// If every listed address is trusted, the left-most one (the furthest hop
/// we can believe). An entry that is not an IP address, met before the
/// client was found, makes the whole header unusable: `peer` is returned.
pub fn client_addr<'a>(
    peer: IpAddr,
    x_forwarded_for_headers: impl Iterator<Item = &'a str>,
    trusted: &[TrustedProxy],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let entries: Vec<&str> = x_forwarded_for_headers
        .flat_map(|header| header.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry) else {
            return peer;
        };
        client = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    client
}

/// One list entry: a bare address, or the forms some proxies write
/// (`[v6]`, `[v6]:port`, `v4:port`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse::<IpAddr>().ok().map(canonical);
    }
    let (host, port) = entry.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(net: &[u8], ip: &[u8], prefix_len: u8) -> bool {
    let mut left = usize::from(prefix_len);
    for (a, b) in net.iter().zip(ip) {
        if left == 0 {
            return true;
        }
        let bits = left.min(8);
        // The top `bits` bits of the byte; `bits` is 1..=8.
        let mask = 0xFFu8 << (8 - bits);
        if a & mask != b & mask {
            return false;
        }
        left -= bits;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> Vec<TrustedProxy> {
        list.iter()
            .map(|p| parse_trusted_proxy(p).unwrap())
            .collect()
    }

    #[test]
    fn parses_addresses_and_networks() {
        assert_eq!(
            parse_trusted_proxy("10.0.0.1").unwrap(),
            TrustedProxy {
                addr: ip("10.0.0.1"),
                prefix_len: 32
            }
        );
        assert_eq!(parse_trusted_proxy("10.0.0.0/8").unwrap().prefix_len, 8);
        assert_eq!(parse_trusted_proxy("::1").unwrap().prefix_len, 128);
        assert_eq!(parse_trusted_proxy("fd00::/8").unwrap().prefix_len, 8);
        assert_eq!(parse_trusted_proxy("0.0.0.0/0").unwrap().prefix_len, 0);
        assert_eq!(
            parse_trusted_proxy("::ffff:10.1.2.3").unwrap().addr,
            ip("10.1.2.3")
        );
        for bad in [
            "",
            "/8",
            "10.0.0.1/",
            "10.0.0.1/33",
            "::1/129",
            "10.0.0.1/+8",
            "10.0.0.1/ 8",
            "localhost",
            "10.0.0",
            "10.0.0.1/8/8",
            "10.0.0.1/256",
        ] {
            assert!(parse_trusted_proxy(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let net = parse_trusted_proxy("192.168.4.0/22").unwrap();
        assert!(net.contains(ip("192.168.4.0")));
        assert!(net.contains(ip("192.168.7.255")));
        assert!(!net.contains(ip("192.168.8.0")));
        assert!(!net.contains(ip("192.168.3.255")));
        assert!(
            net.contains(ip("::ffff:192.168.5.1")),
            "v4-mapped counts as v4"
        );
        let v6 = parse_trusted_proxy("2001:db8::/33").unwrap();
        assert!(v6.contains(ip("2001:db8:7fff::1")));
        assert!(!v6.contains(ip("2001:db8:8000::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(
            parse_trusted_proxy("0.0.0.0/0")
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = proxies(&["10.0.0.1"]);
        let got = client_addr(ip("203.0.113.9"), ["1.2.3.4"].into_iter(), &trusted);
        assert_eq!(got, ip("203.0.113.9"));
        let got = client_addr(ip("203.0.113.9"), ["1.2.3.4"].into_iter(), &[]);
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn right_most_untrusted_address_wins() {
        let trusted = proxies(&["10.0.0.0/8", "::1"]);
        // The client forged "6.6.6.6"; the trusted proxies appended the rest.
        let got = client_addr(
            ip("10.0.0.1"),
            ["6.6.6.6, 198.51.100.7, 10.0.0.2"].into_iter(),
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let got = client_addr(
            ip("::1"),
            ["6.6.6.6", "2001:db8::5,10.1.1.1"].into_iter(),
            &trusted,
        );
        assert_eq!(got, ip("2001:db8::5"));
    }

    #[test]
    fn trusted_peer_without_header_is_itself() {
        let trusted = proxies(&["127.0.0.1"]);
        assert_eq!(
            client_addr(ip("127.0.0.1"), std::iter::empty(), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_addr(ip("127.0.0.1"), [""].into_iter(), &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn all_trusted_gives_the_left_most() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let got = client_addr(ip("10.0.0.1"), ["10.9.9.9, 10.0.0.3"].into_iter(), &trusted);
        assert_eq!(got, ip("10.9.9.9"));
    }

    #[test]
    fn garbage_gives_the_peer() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client_addr(ip("10.0.0.1"), ["not an ip"].into_iter(), &trusted),
            ip("10.0.0.1")
        );
        // Garbage to the left of the real client is never reached.
        let got = client_addr(
            ip("10.0.0.1"),
            ["<script>, 198.51.100.7"].into_iter(),
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
        let got = client_addr(
            ip("10.0.0.1"),
            ["1.2.3.4, zz, 10.0.0.2"].into_iter(),
            &trusted,
        );
        assert_eq!(got, ip("10.0.0.1"));
        let huge = "9".repeat(10_000);
        assert_eq!(
            client_addr(ip("10.0.0.1"), [huge.as_str()].into_iter(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ports_and_brackets_are_understood() {
        let trusted = proxies(&["10.0.0.1"]);
        for (header, want) in [
            ("198.51.100.7:4711", "198.51.100.7"),
            ("[2001:db8::9]:443", "2001:db8::9"),
            ("[2001:db8::9]", "2001:db8::9"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
        ] {
            assert_eq!(
                client_addr(ip("10.0.0.1"), [header].into_iter(), &trusted),
                ip(want),
                "{header}"
            );
        }
        // A mapped peer address is the same proxy.
        assert_eq!(
            client_addr(
                ip("::ffff:10.0.0.1"),
                ["198.51.100.7"].into_iter(),
                &trusted
            ),
            ip("198.51.100.7")
        );
    }
}
