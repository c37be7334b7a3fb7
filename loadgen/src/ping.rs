//! `ping`: closed-loop publish→ack round trips through the protocol
//! crate's tokio client (one request in flight per client). A quick health
//! check of a node, not a load test: the open-loop scenarios are for load.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herald_protocol::tokio_client::{Client, ClientOptions, ReconnectPolicy};
use herald_protocol::{ClientConfig, PublishOptions, SubscribeOptions};

pub(crate) fn run(target: &str, clients: u32, publishes: u32, payload: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(ping(target, clients, publishes, payload))
}

async fn ping(target: &str, clients: u32, publishes: u32, payload: usize) -> anyhow::Result<()> {
    if clients == 0 {
        bail!("--clients must be at least 1");
    }
    let body = vec![0x5a_u8; payload];
    let mut connect = Vec::with_capacity(clients as usize);
    let mut rtt = Vec::with_capacity((clients * publishes) as usize);
    let mut errors = std::collections::BTreeMap::new();
    for i in 0..clients {
        let options = ClientOptions {
            session: ClientConfig {
                token: format!("loadgen-{i}"),
                client_name: "herald-loadgen".into(),
                ..ClientConfig::default()
            },
            reconnect: ReconnectPolicy {
                max_attempts: Some(1),
                ..ReconnectPolicy::default()
            },
            ..ClientOptions::default()
        };
        let t = Instant::now();
        let (client, _events) = Client::connect(target, options)
            .await
            .with_context(|| format!("client {i} could not connect to {target}"))?;
        connect.push(t.elapsed());
        let room = format!("loadgen:ping-{i}");
        client.subscribe(&room, SubscribeOptions::default()).await?;
        for _ in 0..publishes {
            let t = Instant::now();
            match client.publish(&room, body.clone(), PublishOptions::default()).await {
                Ok(_) => rtt.push(t.elapsed()),
                Err(e) => *errors.entry(e.to_string()).or_insert(0u64) += 1,
            }
        }
        client.close().await;
    }
    print_table("connect", &mut connect);
    print_table("publish->ack", &mut rtt);
    for (error, n) in errors {
        println!("{:>14}: {n} x {error}", "refused");
    }
    Ok(())
}

fn print_table(name: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        return;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    println!(
        "{name:>14}: n={} p50={:.0}us p90={:.0}us p99={:.0}us max={:.0}us",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}
