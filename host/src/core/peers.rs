//! Trusted peers: the addresses an operator names (edge proxies, gateways, trunks) whose
//! headers may steer requests. Everyone else is an untrusted client: the addresses in its
//! headers are claims, and the server sends to where its packets come from (the egress
//! rule in the README's security model). Sans-IO.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address block: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// Not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address (names are not resolved here)")]
    Address(String),
    /// The prefix length is not a number within the family's width.
    #[error("prefix /{0} is not 0..=32 for IPv4 or 0..=128 for IPv6")]
    Prefix(String),
    /// Bits set past the prefix (`10.0.0.1/8`): almost always a typo.
    #[error("{0} has host bits set past its prefix")]
    HostBits(String),
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `192.0.2.7`, `192.0.2.0/24`, `2001:db8::1`, `2001:db8::/32`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| CidrError::Address(addr.to_string()))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= width => n,
                _ => return Err(CidrError::Prefix(p.to_string())),
            },
        };
        let cidr = Self { addr, prefix };
        if cidr.network() != addr {
            return Err(CidrError::HostBits(s.to_string()));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    fn bits(ip: IpAddr) -> (u128, u8) {
        match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    fn mask(prefix: u8, width: u8) -> u128 {
        if prefix == 0 {
            0
        } else {
            (u128::MAX << (width - prefix)) & (u128::MAX >> (128 - width))
        }
    }

    /// The address with the bits past the prefix cleared.
    fn network(&self) -> IpAddr {
        let (bits, width) = Self::bits(self.addr);
        let net = bits & Self::mask(self.prefix, width);
        match self.addr {
            IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(net as u32)),
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(net)),
        }
    }

    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a
    /// dual-stack socket reports an IPv4 peer) is taken as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let (a, width) = Self::bits(ip);
        let (b, _) = Self::bits(self.addr);
        let m = Self::mask(self.prefix, width);
        a & m == b & m
    }
}

/// The operator's trusted peers (`sip.trusted-peers`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedPeers(Vec<Cidr>);

impl TrustedPeers {
    /// These blocks.
    pub fn new(blocks: Vec<Cidr>) -> Self {
        Self(blocks)
    }

    /// Whether a packet from `ip` comes from a trusted peer.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_parse_and_match() {
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.200.3.4")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")), "families never mix");
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert_eq!(v6.to_string(), "2001:db8::/32");
    }

    #[test]
    fn bad_blocks_are_refused_with_a_reason() {
        assert!(matches!(
            "example.org".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBits(_))
        ));
    }
}
