//! What the transport knows about a connection, handed to every request served on it.

use std::net::SocketAddr;

use http::HeaderValue;

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The `X-Forwarded-For` value, computed once per connection.
    pub forwarded_for: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let forwarded_for =
            HeaderValue::from_str(&client_ip(peer)).unwrap_or(HeaderValue::from_static("unknown"));
        ConnInfo {
            peer,
            tls,
            forwarded_for,
        }
    }
}

fn client_ip(peer: SocketAddr) -> String {
    match peer {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => a.ip().to_string(),
        },
    }
}
