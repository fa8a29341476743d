//! [`client_address`]: which address a request comes from, when reverse proxies stand
//! between the client and the server, and [`forwarded_https`]: whether that client used
//! HTTPS. The server and sessiond-axum both use them, for `bind_ip`, the recorded client
//! address and the cookie's `Secure`.

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
pub fn client_address<'a, L: AsRef<[u8]> + ?Sized + 'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a L>,
    trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    client_hop(peer, forwarded_for, trusted).0
}

/// Whether the client reached the first trusted proxy over HTTPS, by `X-Forwarded-Proto`
/// read under the same rule as [`client_address`]: only when the TCP `peer` is a trusted
/// proxy, and only the value written about the hop [`client_address`] takes.
///
/// Proxies that append write one scheme per hop, so the value is the one as far from the
/// right as the client's address is in `X-Forwarded-For`; a value a client sent itself
/// sits further left and is never read. A proxy that overwrites the header leaves one
/// value: it is taken when the client is the peer's own client (or the peer sends no
/// `X-Forwarded-For` at all), and otherwise nothing says how the client connected, so
/// the answer is no. An untrusted peer, no header or any value but `https` is no as
/// well.
///
/// ```
/// use std::net::IpAddr;
/// let proxy: IpAddr = "10.0.0.1".parse().unwrap();
/// let trusted = |p: IpAddr| p == proxy;
/// assert!(sessiond_core::forwarded_https(proxy, ["198.51.100.2"], ["https"], trusted));
/// // The client's own claim, left of what the proxy wrote, is not read.
/// assert!(!sessiond_core::forwarded_https(proxy, ["198.51.100.2"], ["https, http"], trusted));
/// // Nor is any header from a peer that is not a trusted proxy.
/// let stranger: IpAddr = "198.51.100.9".parse().unwrap();
/// assert!(!sessiond_core::forwarded_https(stranger, ["1.2.3.4"], ["https"], trusted));
/// ```
pub fn forwarded_https<'a, L: AsRef<[u8]> + ?Sized + 'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a L>,
    forwarded_proto: impl IntoIterator<Item = &'a L>,
    trusted: impl Fn(IpAddr) -> bool,
) -> bool {
    let peer = peer.to_canonical();
    if !trusted(peer) {
        return false;
    }
    let forwarded_for: Vec<&[u8]> = forwarded_for.into_iter().map(AsRef::as_ref).collect();
    let listed = forwarded_for.iter().any(|l| !l.trim_ascii().is_empty());
    let hop = match client_hop(peer, forwarded_for, &trusted).1 {
        Some(hop) => hop,
        // A proxy that names no client at all speaks of its own client: value 0.
        None if !listed => 0,
        // A list whose nearest hop is not an address names nobody.
        None => return false,
    };
    let lines: Vec<&[u8]> = forwarded_proto.into_iter().map(AsRef::as_ref).collect();
    lines
        .iter()
        .rev()
        .flat_map(|l| l.rsplit(|b| *b == b','))
        .nth(hop)
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"https"))
}

/// The client's address and how far from the right of `X-Forwarded-For` it was found
/// (none when it is the peer itself).
fn client_hop<'a, L: AsRef<[u8]> + ?Sized + 'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a L>,
    trusted: impl Fn(IpAddr) -> bool,
) -> (IpAddr, Option<usize>) {
    // A dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`.
    let peer = peer.to_canonical();
    if !trusted(peer) {
        return (peer, None);
    }
    let lines: Vec<&[u8]> = forwarded_for.into_iter().map(AsRef::as_ref).collect();
    let mut client = (peer, None);
    // Split as bytes: a hop holding bytes that are not UTF-8 (a client may send any)
    // stops the walk there, and the hops the proxies appended to its right still count.
    for (i, hop) in lines
        .iter()
        .rev()
        .flat_map(|l| l.rsplit(|b| *b == b','))
        .enumerate()
    {
        let Some(ip) = std::str::from_utf8(hop)
            .ok()
            .and_then(|h| parse_hop(h.trim()))
        else {
            break;
        };
        client = (ip, Some(i));
        if !trusted(ip) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, or either
/// with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = if let Ok(ip) = hop.parse::<IpAddr>() {
        ip
    } else if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        sock.ip()
    } else {
        hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?
    };
    Some(ip.to_canonical())
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
        assert_eq!(client_address(lb, [] as [&str; 0], trusted), lb);
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
        // Bytes that are not UTF-8 in the client's part of a line do not hide the
        // address the proxy appended to it.
        let line: &[u8] = b"\x80\xff, 198.51.100.2";
        assert_eq!(client_address(lb, [line], trusted), ip("198.51.100.2"));
        // A dual-stack listener's view of an IPv4 proxy is still that proxy.
        assert_eq!(
            client_address(ip("::ffff:10.0.0.1"), ["198.51.100.2"], trusted),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn the_scheme_is_the_one_written_about_the_client_hop() {
        let lb = ip("10.0.0.1");
        let inner = ip("10.0.0.2");
        let trusted = |p: IpAddr| p == lb || p == inner;
        let https = |peer, xff: &[&str], xfp: &[&str]| {
            forwarded_https(peer, xff.iter().copied(), xfp.iter().copied(), trusted)
        };
        assert!(https(lb, &["198.51.100.2"], &["https"]));
        assert!(https(lb, &["198.51.100.2"], &["HTTPS"]));
        assert!(!https(lb, &["198.51.100.2"], &["http"]));
        assert!(!https(lb, &["198.51.100.2"], &[]));
        // The client sent "https" itself; the proxy appended what it saw.
        assert!(!https(lb, &["198.51.100.2"], &["https, http"]));
        assert!(!https(lb, &["198.51.100.2"], &["https", "http"]));
        // Two trusted proxies: the outer one saw HTTPS, the inner one plain HTTP from it.
        assert!(https(lb, &["198.51.100.2, 10.0.0.2"], &["https, http"]));
        assert!(!https(lb, &["198.51.100.2, 10.0.0.2"], &["http, https"]));
        // The inner proxy overwrote the header: nothing tells how the client came.
        assert!(!https(lb, &["198.51.100.2, 10.0.0.2"], &["https"]));
        // An untrusted peer, or a forwarded address that is not one.
        assert!(!https(ip("198.51.100.9"), &["1.2.3.4"], &["https"]));
        assert!(!https(lb, &["bogus"], &["https"]));
        // A proxy that names no client speaks of its own.
        assert!(https(lb, &[], &["https"]));
        assert!(!https(lb, &[], &["https, http"]));
    }
}
