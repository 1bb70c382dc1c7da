//! The client address behind reverse proxies. `X-Forwarded-For` and `Forwarded` are only
//! believed when the direct peer is a configured trusted proxy; then the client is the
//! right-most address in the chain that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The direct peer of a connection, put into request extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|n| n.contains(&ip))
}

/// The address to log and store as `remote_addr`.
pub fn client_addr(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    proxies: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.ip().to_canonical();
    if !trusted(peer, proxies) {
        return Some(peer);
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(v) = value.to_str() else {
            return Some(peer);
        };
        for part in v.split(',') {
            match parse_addr(part) {
                Some(ip) => chain.push(ip),
                None => return Some(peer),
            }
        }
    }
    if chain.is_empty() {
        for value in headers.get_all("forwarded") {
            let Ok(v) = value.to_str() else {
                return Some(peer);
            };
            for element in v.split(',') {
                for pair in element.split(';') {
                    let mut kv = pair.splitn(2, '=');
                    let (Some(k), Some(val)) = (kv.next(), kv.next()) else {
                        continue;
                    };
                    if k.trim().eq_ignore_ascii_case("for") {
                        match parse_addr(val) {
                            Some(ip) => chain.push(ip),
                            None => return Some(peer),
                        }
                    }
                }
            }
        }
    }
    Some(
        chain
            .iter()
            .rev()
            .copied()
            .find(|ip| !trusted(*ip, proxies))
            .or_else(|| chain.first().copied())
            .unwrap_or(peer),
    )
}

/// Parses `1.2.3.4`, `1.2.3.4:5`, `"[2001:db8::1]:80"`, `2001:db8::1`.
fn parse_addr(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = s.strip_prefix('[').and_then(|r| r.split(']').next())?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, axum::http::HeaderValue::from_static(v));
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|s| s.parse().ok()).collect()
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(
            client_addr(sa("9.9.9.9:1234"), &h, &nets(&["10.0.0.0/8"])),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn trusted_proxy_chain() {
        let proxies = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.1.1")]);
        assert_eq!(
            client_addr(sa("127.0.0.1:5000"), &h, &proxies),
            ip("203.0.113.7")
        );
        let h = headers(&[(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.2",
        )]);
        assert_eq!(
            client_addr(sa("127.0.0.1:5000"), &h, &proxies),
            ip("2001:db8::7")
        );
        let h = headers(&[]);
        assert_eq!(
            client_addr(sa("127.0.0.1:5000"), &h, &proxies),
            ip("127.0.0.1")
        );
        let h = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(
            client_addr(sa("127.0.0.1:5000"), &h, &proxies),
            ip("127.0.0.1")
        );
        let mapped = sa("[::ffff:127.0.0.1]:5000");
        let h = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(client_addr(mapped, &h, &proxies), ip("198.51.100.1"));
    }
}
