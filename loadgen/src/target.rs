//! Target URLs: which protocol a connection speaks and where it goes.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context, Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Herald over WebSocket: binary FlatBuffers frames.
    Herald,
    /// A Socket.IO 4 server, websocket transport (Engine.IO 4 text packets).
    SocketIo,
    /// Herald's Server-Sent Events: connections that read are `GET /sse`
    /// streams; publishers are Herald WebSocket connections to the same
    /// node (an SSE stream cannot send).
    Sse,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub url: String,
    pub kind: Kind,
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request path of the WebSocket upgrade, with query (sse://: of the
    /// streams).
    pub path: String,
}

impl Target {
    /// `ws://host:port[/path]` (path defaults to `/ws`),
    /// `socketio://host:port[/path]` (defaults to `/socket.io/`) or
    /// `sse://host:port[/path]` (defaults to `/sse`).
    pub fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("target {url:?}: expected scheme://host:port"))?;
        let kind = match scheme {
            "ws" => Kind::Herald,
            "socketio" => Kind::SocketIo,
            "sse" => Kind::Sse,
            "quic" => bail!(
                "target {url:?}: quic:// needs Herald's QUIC transport, which this build of herald does not have yet"
            ),
            "wss" | "https" => bail!("target {url:?}: TLS targets are not supported; use ws:// on a trusted network"),
            other => bail!("target {url:?}: unknown scheme {other:?} (use ws://, socketio://, sse:// or quic://)"),
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
            (Kind::Sse, "" | "/") => "/sse".to_owned(),
            (Kind::Sse, p) => p.to_owned(),
        };
        Ok(Self {
            url: url.to_owned(),
            kind,
            addr,
            host: hostport.to_owned(),
            path,
        })
    }

    /// Path of this target's WebSocket upgrade. An sse:// run publishes
    /// through the node's own WebSocket endpoint, `/ws`, beside the streams.
    pub fn ws_path(&self) -> &str {
        match self.kind {
            Kind::Sse => "/ws",
            Kind::Herald | Kind::SocketIo => &self.path,
        }
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
    fn sse_targets_stream_at_sse_and_publish_at_ws() {
        let t = Target::parse("sse://127.0.0.1:8080").unwrap();
        assert_eq!((t.kind, t.path.as_str(), t.ws_path()), (Kind::Sse, "/sse", "/ws"));
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(Target::parse("sse://127.0.0.1:8080/").unwrap().path, "/sse");
        let t = Target::parse("sse://localhost:9/events/sse?presence=1").unwrap();
        assert_eq!(t.path, "/events/sse?presence=1");
        assert_eq!(t.ws_path(), "/ws");
        // A ws:// target's WebSocket path is its own.
        assert_eq!(Target::parse("ws://127.0.0.1:1/x").unwrap().ws_path(), "/x");
        assert!(Target::parse("sse://").is_err());
        assert!(Target::parse("sse:///sse").is_err());
        let e = Target::parse_list("sse://127.0.0.1:1,ws://127.0.0.1:1").unwrap_err();
        assert!(e.to_string().contains("same scheme"), "{e}");
        let e = Target::parse("sses://127.0.0.1:1").unwrap_err().to_string();
        assert!(e.contains("sse://"), "{e}");
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
