//! [`client_address`]: which address a request comes from, when reverse proxies stand
//! between the client and the server. The server and sessiond-axum both use it, for
//! `bind_ip` and the recorded client address.

use std::net::IpAddr;

/// The client's address: the TCP `peer`, or, when the peer is a trusted proxy, the
/// nearest address in `X-Forwarded-For` (every header line, in order) that is not a
/// trusted proxy (`trusted` says which), walking from the right.
///
/// Proxies append the address they received the request from, so the right end of the
/// list is written by the trusted proxies and the left end by whoever sent the request:
/// taking the first hop would let a client name any address it likes (a thief could
/// present the victim's and pass `bind_ip`). When every hop is a trusted proxy, the
/// leftmost is taken; a hop that is not an address stops the walk there.
///
/// ```
/// use std::net::IpAddr;
/// let proxy: IpAddr = "10.0.0.1".parse().unwrap();
/// // The client forged its first hop; the proxy appended the real address.
/// let ip = sessiond_core::client_address(proxy, ["203.0.113.7, 198.51.100.2"], |p| p == proxy);
/// assert_eq!(ip, "198.51.100.2".parse::<IpAddr>().unwrap());
/// ```
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    if !trusted(peer) {
        return peer;
    }
    let lines: Vec<&str> = forwarded_for.into_iter().collect();
    let mut client = peer;
    for hop in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
        let Some(ip) = parse_hop(hop.trim()) else {
            break;
        };
        client = ip;
        if !trusted(ip) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, or either
/// with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_only_up_to_the_first_untrusted_hop() {
        let lb = ip("10.0.0.1");
        let inner = ip("10.0.0.2");
        let trusted = |p: IpAddr| p == lb || p == inner;
        // An untrusted peer: its header means nothing.
        assert_eq!(
            client_address(ip("198.51.100.9"), ["1.2.3.4"], trusted),
            ip("198.51.100.9")
        );
        // No header: the proxy itself.
        assert_eq!(client_address(lb, [], trusted), lb);
        // One proxy that appends.
        assert_eq!(
            client_address(lb, ["198.51.100.2"], trusted),
            ip("198.51.100.2")
        );
        // A forged first hop is skipped; the address the proxy saw is taken.
        assert_eq!(
            client_address(lb, ["203.0.113.7, 198.51.100.2"], trusted),
            ip("198.51.100.2")
        );
        // Two trusted proxies in a chain, the header split over two lines.
        assert_eq!(
            client_address(lb, ["203.0.113.7, 198.51.100.2", "10.0.0.2"], trusted),
            ip("198.51.100.2")
        );
        // Every hop trusted: the leftmost.
        assert_eq!(client_address(lb, ["10.0.0.2"], trusted), inner);
        // Garbage stops the walk at the last address believed.
        assert_eq!(
            client_address(lb, ["198.51.100.2, bogus, 10.0.0.2"], trusted),
            inner
        );
        // Ports and brackets as some proxies write them.
        assert_eq!(
            client_address(lb, ["[2001:db8::5]:4711"], trusted),
            ip("2001:db8::5")
        );
        assert_eq!(
            client_address(lb, ["198.51.100.2:80"], trusted),
            ip("198.51.100.2")
        );
        assert_eq!(
            client_address(lb, ["[2001:db8::6]"], trusted),
            ip("2001:db8::6")
        );
    }
}
