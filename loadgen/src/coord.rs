//! The coordinator: starts the workers (a thread, or child processes with
//! `--workers K`), sends every worker the same commands, merges what they
//! report (counts, histograms, per-second timeline) and builds the report.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::hist::Latency;
use crate::locality::Split;
use crate::plan::{Plan, Scenario};
use crate::procstat;
use crate::worker::{Command, Connected, Report, StepResult, Tick, Worker, unix_ns};

/// What the report needs besides the plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// "connect", "fanout", "chat" or "run".
    pub scenario_name: String,
    pub target_pids: Vec<u32>,
    /// Every option as given, recorded in the report.
    pub options: Value,
    pub progress: bool,
}

enum Link {
    Local(mpsc::Sender<Command>, std::thread::JoinHandle<()>),
    Remote(Child, ChildStdin),
}

impl Link {
    fn send(&mut self, cmd: &Command) -> Result<()> {
        match self {
            Link::Local(tx, _) => tx.send(cmd.clone()).map_err(|_| anyhow::anyhow!("worker thread ended")),
            Link::Remote(_, stdin) => {
                let line = serde_json::to_string(cmd)?;
                writeln!(stdin, "{line}").context("worker process ended")?;
                stdin.flush().context("worker process ended")
            }
        }
    }

    /// CPU time of a worker process so far (a thread's is in our own).
    fn child_cpu_secs(&self) -> f64 {
        match self {
            Link::Local(..) => 0.0,
            Link::Remote(child, _) => procstat::cpu_secs(&child.id().to_string()).unwrap_or(0.0),
        }
    }

    fn finish(self) {
        match self {
            Link::Local(tx, h) => {
                let _ = tx.send(Command::Finish);
                let _ = h.join();
            }
            Link::Remote(mut child, mut stdin) => {
                let _ = writeln!(stdin, "{}", serde_json::to_string(&Command::Finish).unwrap_or_default());
                drop(stdin);
                let _ = child.wait();
            }
        }
    }
}

type Inbox = mpsc::Receiver<(usize, Report)>;

fn spawn(plan: &Plan) -> Result<(Vec<Link>, Inbox)> {
    let (tx, rx) = mpsc::channel();
    let mut links = Vec::new();
    if plan.workers <= 1 {
        let (ctx, crx) = mpsc::channel::<Command>();
        let plan = Plan {
            index: 0,
            ..plan.clone()
        };
        let h = std::thread::Builder::new().name("worker-0".into()).spawn(move || {
            let out = tx.clone();
            let mut worker = match Worker::new(plan, move |r| {
                let _ = out.send((0, r));
            }) {
                Ok(w) => w,
                Err(e) => {
                    let _ = tx.send((0, Report::Fatal(format!("{e:#}"))));
                    return;
                }
            };
            while let Ok(cmd) = crx.recv() {
                match worker.handle(cmd) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        let _ = tx.send((0, Report::Fatal(format!("{e:#}"))));
                        break;
                    }
                }
            }
        })?;
        links.push(Link::Local(ctx, h));
        return Ok((links, rx));
    }
    let exe = std::env::current_exe().context("finding this executable to start workers")?;
    for index in 0..plan.workers {
        let mut child = Process::new(&exe)
            .arg("__worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker process")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        writeln!(stdin, "{}", serde_json::to_string(&Plan { index, ..plan.clone() })?)?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Report>(&line) {
                    Ok(r) => {
                        if tx.send((index, r)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send((index, Report::Fatal(format!("bad worker output: {e}"))));
                        return;
                    }
                }
            }
            let _ = tx.send((index, Report::Fatal(format!("worker {index} exited"))));
        });
        links.push(Link::Remote(child, stdin));
    }
    Ok((links, rx))
}

/// Body of a `herald-loadgen __worker` process: the plan, then one command
/// per line on stdin; reports as JSON lines on stdout.
pub fn worker_process() -> Result<()> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let plan: Plan = serde_json::from_str(&lines.next().context("no plan on stdin")??)?;
    let mut worker = Worker::new(plan, |r| {
        let mut out = std::io::stdout().lock();
        if let Ok(line) = serde_json::to_string(&r) {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    })?;
    for line in lines {
        let cmd: Command = serde_json::from_str(&line?)?;
        match worker.handle(cmd) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = serde_json::to_string(&Report::Fatal(format!("{e:#}")))?;
                println!("{line}");
                break;
            }
        }
    }
    Ok(())
}

/// Per-second figures merged over workers.
#[derive(Default)]
struct Second {
    tick: Tick,
    latency: Latency,
    workers: usize,
}

struct Coordinator {
    rx: Inbox,
    workers: usize,
    timeline: BTreeMap<u64, Second>,
    progress: bool,
    last_print: Instant,
    started: Instant,
    connections_target: usize,
    step_hist: Latency,
    target_pids: Vec<u32>,
    /// Unix ns the workers count their seconds from.
    run_start_ns: u64,
    /// Per second: the target's RSS and cumulative CPU seconds.
    target_samples: BTreeMap<u64, (Option<u64>, Option<f64>)>,
}

impl Coordinator {
    /// Reads the target's RSS and CPU once per second of the run.
    fn sample_target(&mut self) {
        if self.target_pids.is_empty() || self.run_start_ns == 0 {
            return;
        }
        let t = unix_ns().saturating_sub(self.run_start_ns) / 1_000_000_000;
        if !self.target_samples.contains_key(&t) {
            let sample = (
                procstat::targets_rss(&self.target_pids),
                procstat::targets_cpu(&self.target_pids),
            );
            self.target_samples.insert(t, sample);
        }
    }

    /// Waits for one report of the kind `pick` accepts from every worker,
    /// folding ticks into the timeline meanwhile.
    fn gather<T>(&mut self, mut pick: impl FnMut(Report) -> Option<T>) -> Result<Vec<T>> {
        let mut got: Vec<Option<T>> = (0..self.workers).map(|_| None).collect();
        let mut quiet_since = Instant::now();
        while got.iter().any(Option::is_none) {
            match self.rx.recv_timeout(Duration::from_millis(250)) {
                Ok((w, Report::Tick(t))) => {
                    quiet_since = Instant::now();
                    self.add_tick(t);
                    let _ = w;
                }
                Ok((_, Report::Fatal(e))) => bail!("worker failed: {e}"),
                Ok((w, r)) => {
                    quiet_since = Instant::now();
                    if let Some(v) = pick(r)
                        && let Some(slot) = got.get_mut(w)
                    {
                        *slot = Some(v);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if quiet_since.elapsed() > Duration::from_secs(300) {
                        bail!("no word from the workers for 5 minutes");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("every worker ended"),
            }
            self.print_progress();
            self.sample_target();
        }
        Ok(got.into_iter().flatten().collect())
    }

    fn add_tick(&mut self, t: Tick) {
        let s = self.timeline.entry(t.t).or_default();
        s.tick.t = t.t;
        s.tick.connections += t.connections;
        s.tick.sent += t.sent;
        s.tick.delivered += t.delivered;
        s.tick.errors += t.errors;
        let h = Latency::from_pairs(&t.latency);
        s.latency.merge(&h);
        self.step_hist.merge(&h);
        s.workers += 1;
    }

    fn print_progress(&mut self) {
        let interval = if std::io::stderr().is_terminal() { 1 } else { 5 };
        if !self.progress || self.last_print.elapsed() < Duration::from_secs(interval) {
            return;
        }
        self.last_print = Instant::now();
        // The newest second every worker has reported.
        let Some((_, s)) = self.timeline.iter().rev().find(|(_, s)| s.workers >= self.workers) else {
            return;
        };
        let p99 = if self.step_hist.count() > 0 {
            fmt_us(self.step_hist.quantile(0.99))
        } else {
            "-".into()
        };
        let errors: u64 = self.timeline.values().map(|s| s.tick.errors).sum();
        eprintln!(
            "[{:>4}s] connections {}/{} | sent {}/s | delivered {}/s | p99 so far {} | errors {}",
            self.started.elapsed().as_secs(),
            s.tick.connections,
            self.connections_target,
            s.tick.sent,
            s.tick.delivered,
            p99,
            errors
        );
    }
}

pub fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

fn merge_steps(results: Vec<StepResult>) -> (StepResult, Latency) {
    let mut total = StepResult::default();
    let mut hist = Latency::new();
    let mut send_lag = Latency::new();
    let mut ack_latency = Latency::new();
    for r in results {
        total.sent += r.sent;
        // Every worker counts the deliveries it expects for its own receivers.
        total.expected += r.expected;
        total.delivered += r.delivered;
        total.duplicated += r.duplicated;
        total.out_of_order += r.out_of_order;
        total.late += r.late;
        total.not_sent += r.not_sent;
        total.acks_ok += r.acks_ok;
        total.acks_untimed += r.acks_untimed;
        total.acks_untracked += r.acks_untracked;
        total.acks_unanswered += r.acks_unanswered;
        total.presence_events += r.presence_events;
        total.typing_events += r.typing_events;
        total.cpu_secs += r.cpu_secs;
        total.first_p50_us = total.first_p50_us.max(r.first_p50_us);
        total.last_p50_us = total.last_p50_us.max(r.last_p50_us);
        for (k, v) in r.errors {
            *total.errors.entry(k).or_insert(0) += v;
        }
        total.locality.merge(&r.locality);
        hist.merge(&Latency::from_pairs(&r.latency));
        send_lag.merge(&Latency::from_pairs(&r.send_lag));
        ack_latency.merge(&Latency::from_pairs(&r.ack_latency));
    }
    total.send_lag = send_lag.to_pairs();
    total.ack_latency = ack_latency.to_pairs();
    (total, hist)
}

/// Whether the target kept up with a step: (a) every scheduled message was
/// sent (not, say, held back because the target stopped reading or the
/// generator fell behind), (b) enough of the expected deliveries arrived by
/// the end of the drain window and (c) the median in the step's last second
/// is at most 1.5 times (+10 ms) the median of its second second: a queue that
/// keeps growing fails (c) even if it drains.
pub fn kept_up(r: &StepResult, keep_up: f64) -> bool {
    let ratio = if r.expected == 0 {
        1.0
    } else {
        r.delivered as f64 / r.expected as f64
    };
    // 1.5x, not 2x: in a 5 s step a queue that starts building in the first
    // second is already deep by the second; at 2x, medians growing from
    // 0.6 s to 1.1 s (170 ms more every second) still passed.
    let growing = r.last_p50_us > r.first_p50_us + r.first_p50_us / 2 + 10_000;
    r.not_sent == 0 && ratio >= keep_up && !growing
}

pub fn run(plan: &Plan, opts: &RunOptions) -> Result<Value> {
    let started_unix_ms = unix_ns() / 1_000_000;
    let rss_before = procstat::targets_rss(&opts.target_pids);
    let target_cpu0 = procstat::targets_cpu(&opts.target_pids);
    let self_cpu0 = procstat::self_cpu_secs();
    let (mut links, rx) = spawn(plan)?;
    let mut c = Coordinator {
        rx,
        workers: links.len(),
        timeline: BTreeMap::new(),
        progress: opts.progress,
        last_print: Instant::now(),
        started: Instant::now(),
        connections_target: plan.connections,
        step_hist: Latency::new(),
        target_pids: opts.target_pids.clone(),
        run_start_ns: 0,
        target_samples: BTreeMap::new(),
    };
    let result = drive(plan, opts, &mut links, &mut c, rss_before);
    let loadgen_cpu = procstat::self_cpu_secs() - self_cpu0 + links.iter().map(Link::child_cpu_secs).sum::<f64>();
    for l in links {
        l.finish();
    }
    let (connected, steps, held, rss_after) = result?;
    let mut all = Latency::new();
    let mut all_acks = Latency::new();
    let mut all_locality = Split::default();
    let mut totals = StepResult::default();
    let mut step_json = Vec::new();
    let mut max_sustained: Option<(f64, f64)> = None;
    for (i, (r, h, target_cpu, kept)) in steps.iter().enumerate() {
        all.merge(h);
        all_locality.merge(&r.locality);
        let acks = Latency::from_pairs(&r.ack_latency);
        all_acks.merge(&acks);
        let step = &plan.steps[i];
        let dps = r.delivered as f64 / step.duration.as_secs_f64();
        if *kept {
            let better = max_sustained.is_none_or(|(d, _)| dps > d);
            if better {
                max_sustained = Some((dps, step.mean_rate()));
            }
        }
        let per = |secs: Option<f64>| {
            secs.filter(|_| r.delivered > 0)
                .map(|s| round2(s * 1e6 / r.delivered as f64))
        };
        step_json.push(json!({
            "name": step.name,
            "rate": step.mean_rate(),
            "rate_from": step.from,
            "rate_to": step.to,
            "duration_secs": step.duration.as_secs_f64(),
            "sent": r.sent,
            "expected": r.expected,
            "delivered": r.delivered,
            "lost": r.expected.saturating_sub(r.delivered),
            "duplicated": r.duplicated,
            "out_of_order": r.out_of_order,
            "late_from_earlier_step": r.late,
            "not_sent": r.not_sent,
            "acks_ok": r.acks_ok,
            "acks_untimed": r.acks_untimed,
            "acks_untracked": r.acks_untracked,
            "acks_unanswered": r.acks_unanswered,
            "errors": r.errors,
            "presence_events": r.presence_events,
            "typing_events": r.typing_events,
            "deliveries_per_sec": round2(dps),
            "latency_us": h.summary(),
            "ack_latency_us": acks.summary(),
            "send_lag_us": Latency::from_pairs(&r.send_lag).summary(),
            "median_second_2_us": r.first_p50_us,
            "median_last_second_us": r.last_p50_us,
            "kept_up": kept,
            "target_cpu_us_per_delivery": per(*target_cpu),
            "loadgen_cpu_us_per_delivery": per(Some(r.cpu_secs)),
            "locality": r.locality.json(false),
        }));
        totals.sent += r.sent;
        totals.expected += r.expected;
        totals.delivered += r.delivered;
        totals.duplicated += r.duplicated;
        totals.out_of_order += r.out_of_order;
    }
    let mut failed_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut connect_hist = Latency::new();
    let (mut attempted, mut ok) = (0, 0);
    for c in &connected {
        attempted += c.attempted;
        ok += c.ok;
        for (k, v) in &c.failed {
            *failed_by_reason.entry(k.clone()).or_insert(0) += v;
        }
        connect_hist.merge(&Latency::from_pairs(&c.latency));
    }
    let peak = c
        .timeline
        .values()
        .map(|s| s.tick.connections)
        .max()
        .unwrap_or(0)
        .max(ok);
    let timeline: Vec<Value> = c
        .timeline
        .values()
        .map(|s| {
            json!({
                "t": s.tick.t,
                "connections": s.tick.connections,
                "sent": s.tick.sent,
                "delivered": s.tick.delivered,
                "p50_us": (s.latency.count() > 0).then(|| s.latency.quantile(0.5)),
                "p99_us": (s.latency.count() > 0).then(|| s.latency.quantile(0.99)),
                "errors": s.tick.errors,
                "target_rss_bytes": c.target_samples.get(&s.tick.t).and_then(|x| x.0),
                "target_cpu_percent": cpu_percent(&c.target_samples, s.tick.t),
            })
        })
        .collect();
    let alive_after = held.as_ref().map(|(alive, _)| *alive);
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) => {
            let n = alive_after.unwrap_or(ok);
            (n > 0).then(|| round2(a.saturating_sub(b) as f64 / n as f64))
        }
        _ => None,
    };
    let target_cpu = match (target_cpu0, procstat::targets_cpu(&opts.target_pids)) {
        (Some(a), Some(b)) => Some(round2(b - a)),
        _ => None,
    };
    let order_checked = plan.scenario != Scenario::Chat
        || plan
            .targets
            .first()
            .is_some_and(|t| t.kind == crate::target::Kind::Herald);
    Ok(json!({
        "schema": 1,
        "tool": "herald-loadgen",
        "version": env!("CARGO_PKG_VERSION"),
        "scenario": opts.scenario_name,
        "targets": plan.targets.iter().map(|t| t.url.clone()).collect::<Vec<_>>(),
        "seed": plan.seed,
        "options": opts.options,
        "machine": procstat::machine(),
        "started_unix_ms": started_unix_ms,
        "duration_secs": round2(c.started.elapsed().as_secs_f64()),
        "connections": {
            "attempted": attempted,
            "ok": ok,
            "failed": attempted.saturating_sub(ok),
            "failed_by_reason": failed_by_reason,
            "peak": peak,
            "alive_after_hold": alive_after,
            "dropped_during_hold": held.map(|(_, d)| d),
        },
        "connect_latency_us": connect_hist.summary(),
        "latency_us": all.summary(),
        "latency_histogram": all.to_pairs(),
        "ack_latency_us": all_acks.summary(),
        "sent": totals.sent,
        "expected": totals.expected,
        "delivered": totals.delivered,
        "lost": totals.expected.saturating_sub(totals.delivered),
        "duplicated": totals.duplicated,
        "out_of_order": totals.out_of_order,
        "order_checked": order_checked,
        // Same-node against cross-node deliveries (several targets); null
        // for `connect`, which delivers nothing.
        "locality": (plan.scenario != Scenario::Connect).then(|| all_locality.json(true)),
        "placement": placement(plan),
        "rate": {
            "steps": step_json,
            "max_sustained_deliveries_per_sec": max_sustained.map(|(d, _)| round2(d)),
            "max_sustained_rate": max_sustained.map(|(_, r)| r),
        },
        "timeline": timeline,
        "target": {
            "pids": opts.target_pids,
            "rss_bytes": rss_after,
            "rss_bytes_before": rss_before,
            "rss_bytes_peak": c.target_samples.values().filter_map(|x| x.0).max(),
            "rss_bytes_per_connection": per_conn,
            "cpu_secs": target_cpu,
        },
        "loadgen": {
            "workers": plan.workers.max(1),
            // This process and every worker process, over the whole run.
            "cpu_secs": round2(loadgen_cpu),
        },
    }))
}

type StepOut = (StepResult, Latency, Option<f64>, bool);
type Driven = (
    Vec<Connected>,
    Vec<StepOut>,
    Option<(u64, BTreeMap<String, u64>)>,
    Option<u64>,
);

fn drive(
    plan: &Plan,
    opts: &RunOptions,
    links: &mut [Link],
    c: &mut Coordinator,
    _rss_before: Option<u64>,
) -> Result<Driven> {
    let start = unix_ns() + 100_000_000;
    c.run_start_ns = start;
    for l in links.iter_mut() {
        l.send(&Command::Open { start_unix_ns: start })?;
    }
    let connected = c.gather(|r| match r {
        Report::Connected(x) => Some(x),
        _ => None,
    })?;
    let ok: u64 = connected.iter().map(|x| x.ok).sum();
    if opts.progress {
        eprintln!("connected {ok}/{}", plan.connections);
    }
    let mut held = None;
    let mut steps = Vec::new();
    if plan.scenario == Scenario::Connect {
        for l in links.iter_mut() {
            l.send(&Command::Hold)?;
        }
        let r = c.gather(|r| match r {
            Report::Held { alive, dropped } => Some((alive, dropped)),
            _ => None,
        })?;
        let mut dropped = BTreeMap::new();
        let mut alive = 0;
        for (a, d) in r {
            alive += a;
            for (k, v) in d {
                *dropped.entry(k).or_insert(0) += v;
            }
        }
        held = Some((alive, dropped));
    } else {
        if ok == 0 {
            bail!(
                "no connection could be opened; see connections.failed_by_reason (run with a smaller --connect-rate?)"
            );
        }
        for (index, step) in plan.steps.iter().enumerate() {
            let cpu0 = procstat::targets_cpu(&opts.target_pids);
            c.step_hist.reset();
            let start = unix_ns() + 50_000_000;
            for l in links.iter_mut() {
                l.send(&Command::Step {
                    index,
                    start_unix_ns: start,
                })?;
            }
            let results = c.gather(|r| match r {
                Report::Step(x) => Some(*x),
                _ => None,
            })?;
            let cpu1 = procstat::targets_cpu(&opts.target_pids);
            let (r, h) = merge_steps(results);
            let kept = kept_up(&r, plan.keep_up);
            if opts.progress {
                let acks = Latency::from_pairs(&r.ack_latency);
                let acks = if acks.count() > 0 {
                    format!(
                        ", ack p50 {} p99 {}",
                        fmt_us(acks.quantile(0.5)),
                        fmt_us(acks.quantile(0.99))
                    )
                } else {
                    String::new()
                };
                eprintln!(
                    "step {}: delivered {}/{} ({:.2}%), {:.0} deliveries/s, p50 {}, p99 {}, p99.9 {}{acks}, dup {}, out of order {}{}",
                    step.name,
                    r.delivered,
                    r.expected,
                    if r.expected == 0 {
                        100.0
                    } else {
                        r.delivered as f64 * 100.0 / r.expected as f64
                    },
                    r.delivered as f64 / step.duration.as_secs_f64(),
                    fmt_us(h.quantile(0.5)),
                    fmt_us(h.quantile(0.99)),
                    fmt_us(h.quantile(0.999)),
                    r.duplicated,
                    r.out_of_order,
                    if kept { "" } else { "  <- not kept up" }
                );
            }
            let target_cpu = match (cpu0, cpu1) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            steps.push((r, h, target_cpu, kept));
            if !kept && plan.stop_on_fail {
                break;
            }
            // Let queues empty before the next step.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let rss_after = procstat::targets_rss(&opts.target_pids);
    Ok((connected, steps, held, rss_after))
}

/// How many connections the plan puts on each target (same order as
/// `targets`): fanout's subscribers and publishers apart, other scenarios'
/// connections together.
fn placement(plan: &Plan) -> Value {
    match plan.scenario {
        Scenario::Fanout => json!({
            "subscribers_per_target": plan.per_target(0..plan.subscribers),
            "publishers_per_target": plan.per_target(plan.subscribers..plan.connections),
        }),
        Scenario::Connect | Scenario::Chat => json!({
            "connections_per_target": plan.per_target(0..plan.connections),
        }),
    }
}

/// The target's CPU use over second `t`, from the samples at `t` and `t + 1`.
fn cpu_percent(samples: &BTreeMap<u64, (Option<u64>, Option<f64>)>, t: u64) -> Option<f64> {
    let a = samples.get(&t)?.1?;
    let b = samples.get(&(t + 1))?.1?;
    Some(round2((b - a) * 100.0))
}

fn round2(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_steps_add_counts_and_histograms() {
        let mut a = StepResult {
            sent: 10,
            expected: 100,
            delivered: 99,
            duplicated: 1,
            ..Default::default()
        };
        let mut b = StepResult {
            sent: 0,
            expected: 50,
            delivered: 50,
            out_of_order: 2,
            ..Default::default()
        };
        let (mut ha, mut hb) = (Latency::new(), Latency::new());
        (0..99).for_each(|i| ha.record(1000 + i));
        (0..50).for_each(|_| hb.record(50_000));
        a.latency = ha.to_pairs();
        b.latency = hb.to_pairs();
        a.send_lag = ha.to_pairs();
        b.send_lag = Latency::new().to_pairs();
        a.ack_latency = Latency::from_pairs(&[(300, 7)]).to_pairs();
        b.ack_latency = Latency::from_pairs(&[(1_500, 3)]).to_pairs();
        (a.acks_ok, a.acks_untimed, a.acks_untracked, a.acks_unanswered) = (8, 1, 1, 2);
        (b.acks_ok, b.acks_untimed, b.acks_untracked, b.acks_unanswered) = (3, 0, 0, 1);
        a.errors.insert("x".into(), 2);
        b.errors.insert("x".into(), 3);
        let (t, h) = merge_steps(vec![a, b]);
        assert_eq!(
            (t.sent, t.expected, t.delivered, t.duplicated, t.out_of_order),
            (10, 150, 149, 1, 2)
        );
        assert_eq!(t.errors["x"], 5);
        assert_eq!(h.count(), 149);
        assert_eq!(Latency::from_pairs(&t.send_lag).count(), 99, "send lags merge too");
        let acks = Latency::from_pairs(&t.ack_latency);
        assert_eq!(acks.count(), 10, "ack latencies merge too");
        assert_eq!((acks.quantile(0.5), acks.quantile(1.0)), (300, 1_500));
        assert_eq!(
            (t.acks_ok, t.acks_untimed, t.acks_untracked, t.acks_unanswered),
            (11, 1, 1, 3)
        );
        assert!(h.quantile(0.99) >= 49_000);
    }

    #[test]
    fn keeping_up_needs_deliveries_and_a_flat_median() {
        let ok = StepResult {
            expected: 1000,
            delivered: 995,
            first_p50_us: 800,
            last_p50_us: 900,
            ..Default::default()
        };
        assert!(kept_up(&ok, 0.99));
        let lossy = StepResult {
            delivered: 900,
            ..ok.clone()
        };
        assert!(!kept_up(&lossy, 0.99));
        let growing = StepResult {
            last_p50_us: 200_000,
            ..ok.clone()
        };
        assert!(!kept_up(&growing, 0.99));
        // A deep queue that keeps growing, by less than 2x within the step.
        let deep = StepResult {
            first_p50_us: 618_000,
            last_p50_us: 1_126_000,
            ..ok.clone()
        };
        assert!(!kept_up(&deep, 0.99));
        // A standing queue that does not grow is kept up.
        let standing = StepResult {
            first_p50_us: 50_000,
            last_p50_us: 80_000,
            ..ok.clone()
        };
        assert!(kept_up(&standing, 0.99));
        let behind = StepResult { not_sent: 1, ..ok };
        assert!(
            !kept_up(&behind, 0.99),
            "a schedule the generator could not send is not kept up"
        );
    }
}
