//! Test support: a node on a free loopback port, clients, raw frames, and a
//! TCP proxy whose connections can be cut to simulate a dropped link.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_gateway::{NodeConfig, NodeHandle};
use herald_protocol::tokio_client::{Client, ClientOptions, Events, ReconnectPolicy};
use herald_protocol::{ClientConfig, ClientEvent};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn node() -> NodeHandle {
    node_with(NodeConfig::default())
}

pub fn node_with(mut config: NodeConfig) -> NodeHandle {
    if config.listen.port() == 8080 {
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    }
    NodeHandle::spawn(config).expect("node starts")
}

pub fn options(user: &str) -> ClientOptions {
    ClientOptions {
        session: ClientConfig {
            token: user.into(),
            ..ClientConfig::default()
        },
        reconnect: ReconnectPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: Some(200),
            seed: Some(7),
        },
        event_capacity: 1024,
    }
}

pub async fn client(url: &str, user: &str) -> (Client, Events) {
    Client::connect(url, options(user)).await.expect("client connects")
}

/// Waits for the first event matching `pick`, skipping others.
pub async fn next_matching<T>(events: &mut Events, mut pick: impl FnMut(ClientEvent) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = events.recv().await.expect("events stream open");
            if let Some(t) = pick(ev) {
                return t;
            }
        }
    })
    .await
    .expect("expected event within the wait bound")
}

/// A TCP proxy to `upstream`; `cut()` drops every proxied connection.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<u64>,
    upstream: Arc<Mutex<SocketAddr>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let (cut, cut_rx) = watch::channel(0u64);
        let upstream = Arc::new(Mutex::new(upstream));
        let up = upstream.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = *up.lock().await;
                let mut cut_rx = cut_rx.clone();
                // Only cuts after this connection was accepted apply to it.
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {}
                        _ = tokio::io::copy(&mut ro, &mut wi) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, cut, upstream }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    pub async fn retarget(&self, upstream: SocketAddr) {
        *self.upstream.lock().await = upstream;
    }
}
