//! Process and machine facts from /proc (Linux).

use serde_json::{Value, json};

pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime of a process in seconds (`self` for this one).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces: ") S ppid ...".
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux configuration we run on.
    100.0
}

pub fn self_cpu_secs() -> f64 {
    cpu_secs("self").unwrap_or(0.0)
}

/// Sum over the target's processes; `None` if any is unreadable.
pub fn targets_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_bytes(p)).sum()
}

pub fn targets_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_secs(&p.to_string())).sum()
}

pub fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or(String::new(), |m| m.trim().to_owned());
    let memory_bytes = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kb| kb * 1024);
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_bytes": memory_bytes,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpu_model": cpu_model,
        "open_files_limit": open_files_limit(),
    })
}

pub fn open_files_limit() -> Option<u64> {
    read_limit("Max open files")
}

fn read_limit(name: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        assert!(cpu_secs("self").is_some());
        assert!(open_files_limit().is_some_and(|n| n > 0));
        let m = machine();
        assert!(m["cores"].as_u64().is_some_and(|c| c > 0));
        assert!(m["memory_bytes"].as_u64().is_some_and(|b| b > 0));
    }
}
