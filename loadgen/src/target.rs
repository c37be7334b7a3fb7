//! Target URLs: which protocol a connection speaks and where it goes.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context, Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Herald over WebSocket: binary FlatBuffers frames.
    Herald,
    /// A Socket.IO 4 server, websocket transport (Engine.IO 4 text packets).
    SocketIo,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub url: String,
    pub kind: Kind,
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request path of the WebSocket upgrade, with query.
    pub path: String,
}

impl Target {
    /// `ws://host:port[/path]` (path defaults to `/ws`) or
    /// `socketio://host:port[/path]` (defaults to `/socket.io/`).
    pub fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("target {url:?}: expected scheme://host:port"))?;
        let kind = match scheme {
            "ws" => Kind::Herald,
            "socketio" => Kind::SocketIo,
            "quic" => bail!(
                "target {url:?}: quic:// needs Herald's QUIC transport, which this build of herald does not have yet"
            ),
            "wss" | "https" => bail!("target {url:?}: TLS targets are not supported; use ws:// on a trusted network"),
            other => bail!("target {url:?}: unknown scheme {other:?} (use ws://, socketio:// or quic://)"),
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if hostport.is_empty() {
            bail!("target {url:?}: missing host:port");
        }
        let addr = hostport
            .to_socket_addrs()
            .with_context(|| format!("target {url:?}: cannot resolve {hostport:?} (host:port)"))?
            .find(SocketAddr::is_ipv4)
            .with_context(|| format!("target {url:?}: no IPv4 address for {hostport:?}"))?;
        let path = match (kind, path) {
            (Kind::Herald, "") => "/ws".to_owned(),
            (Kind::Herald, p) => p.to_owned(),
            (Kind::SocketIo, "" | "/") => "/socket.io/?EIO=4&transport=websocket".to_owned(),
            (Kind::SocketIo, p) if p.contains('?') => p.to_owned(),
            (Kind::SocketIo, p) => format!("{p}?EIO=4&transport=websocket"),
        };
        Ok(Self {
            url: url.to_owned(),
            kind,
            addr,
            host: hostport.to_owned(),
            path,
        })
    }

    /// A comma-separated list; connections go round-robin over them.
    pub fn parse_list(urls: &str) -> Result<Vec<Self>> {
        let list: Vec<Self> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(Self::parse)
            .collect::<Result<_>>()?;
        if list.is_empty() {
            bail!("--target: give at least one URL");
        }
        if list.iter().any(|t| t.kind != list[0].kind) {
            bail!("--target: all URLs must use the same scheme");
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_default_paths() {
        let t = Target::parse("ws://127.0.0.1:8080").unwrap();
        assert_eq!((t.kind, t.path.as_str()), (Kind::Herald, "/ws"));
        let t = Target::parse("socketio://127.0.0.1:3000").unwrap();
        assert_eq!(t.kind, Kind::SocketIo);
        assert_eq!(t.path, "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(t.addr, "127.0.0.1:3000".parse().unwrap());
    }

    #[test]
    fn quic_and_unknown_schemes_are_refused_with_a_reason() {
        let e = Target::parse("quic://127.0.0.1:4433").unwrap_err().to_string();
        assert!(e.contains("QUIC"), "{e}");
        assert!(Target::parse("http://x:1").is_err());
        assert!(Target::parse("ws://").is_err());
        assert!(Target::parse_list("ws://127.0.0.1:1,socketio://127.0.0.1:2").is_err());
    }

    #[test]
    fn lists_keep_their_order() {
        let l = Target::parse_list("ws://127.0.0.1:1/ws, ws://127.0.0.1:2/ws").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].addr.port(), 2);
    }
}
