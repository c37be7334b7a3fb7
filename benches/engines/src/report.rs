//! Markdown tables from the `RESULT` lines collected by `run.sh`.

use anyhow::Result;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Default)]
struct Results {
    /// Engines (row labels) of each section, in order of first appearance.
    rows: HashMap<String, Vec<String>>,
    values: HashMap<(String, String, String), String>,
}

impl Results {
    fn load(path: &Path) -> Result<Self> {
        let mut r = Self::default();
        for line in std::fs::read_to_string(path)?.lines() {
            let mut f: Vec<&str> = line.split('\t').collect();
            if f.first() == Some(&"RESULT") {
                f.remove(0);
            }
            let [section, engine, key, value] = f[..] else {
                continue;
            };
            let rows = r.rows.entry(section.to_owned()).or_default();
            if !rows.iter().any(|e| e == engine) {
                rows.push(engine.to_owned());
            }
            r.values.insert(
                (section.to_owned(), engine.to_owned(), key.to_owned()),
                value.to_owned(),
            );
        }
        Ok(r)
    }

    fn rows(&self, section: &str) -> Vec<String> {
        self.rows.get(section).cloned().unwrap_or_default()
    }

    fn get(&self, section: &str, engine: &str, key: &str) -> String {
        self.values
            .get(&(section.to_owned(), engine.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_else(|| "–".to_owned())
    }

    fn num(&self, section: &str, engine: &str, key: &str) -> Option<f64> {
        self.get(section, engine, key).parse().ok()
    }
}

fn ms(us: Option<f64>) -> String {
    us.map_or_else(|| "–".to_owned(), |v| format!("{:.2}", v / 1e3))
}

fn thousands(v: Option<f64>) -> String {
    let Some(v) = v else {
        return "–".to_owned();
    };
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn table(header: &[&str], rows: &[Vec<String>]) {
    println!("| {} |", header.join(" | "));
    println!("|{}", " --- |".repeat(header.len()));
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
    println!();
}

pub fn print(path: &Path) -> Result<()> {
    let r = Results::load(path)?;

    println!("### Disk floor: write 4 KiB + fdatasync on a plain file\n");
    let mut rows = Vec::new();
    for when in r.rows("fsync") {
        for m in ["append", "overwrite"] {
            rows.push(vec![
                when.clone(),
                m.to_owned(),
                ms(r.num("fsync", &when, &format!("{m}_p50_us"))),
                ms(r.num("fsync", &when, &format!("{m}_p99_us"))),
                ms(r.num("fsync", &when, &format!("{m}_mean_us"))),
                r.get("fsync", &when, &format!("{m}_samples")),
            ]);
        }
    }
    table(&["when", "mode", "p50 ms", "p99 ms", "mean ms", "samples"], &rows);

    println!(
        "### Append, one durable commit (fsync) per batch, 64-byte payloads, 1,000 rooms \
         (best round)\n"
    );
    let mut rows = Vec::new();
    let mut detail = Vec::new();
    for e in r.rows("append") {
        let mut row = vec![e.clone()];
        let mut drow = vec![e.clone()];
        // Disk floor probed right before each round of this engine.
        let probes: Vec<String> = (1..=9)
            .filter_map(|n| r.num("probe", &e, &format!("r{n}_append_p50_us")))
            .map(|v| ms(Some(v)))
            .collect();
        drow.push(if probes.is_empty() {
            "–".to_owned()
        } else {
            probes.join(" / ")
        });
        for b in [1, 64, 1024] {
            // The round with the highest throughput.
            let rounds: Vec<(u32, f64)> = (1..=9)
                .filter_map(|n| r.num("append", &e, &format!("r{n}_b{b}_msgs_s")).map(|v| (n, v)))
                .collect();
            let best = rounds
                .iter()
                .copied()
                .max_by(|x, y| x.1.total_cmp(&y.1))
                .map_or(1, |(n, _)| n);
            let k = format!("r{best}_b{b}");
            row.push(thousands(r.num("append", &e, &format!("{k}_msgs_s"))));
            row.push(format!(
                "{} / {}",
                ms(r.num("append", &e, &format!("{k}_p50_us"))),
                ms(r.num("append", &e, &format!("{k}_p99_us")))
            ));
            drow.push(format!(
                "{} (best: {} msgs, {} commits, {} s)",
                rounds
                    .iter()
                    .map(|(_, v)| thousands(Some(*v)))
                    .collect::<Vec<_>>()
                    .join(" / "),
                r.get("append", &e, &format!("{k}_messages")),
                r.get("append", &e, &format!("{k}_commits")),
                r.get("append", &e, &format!("{k}_wall_s"))
            ));
        }
        row.push(r.get("syscalls", &e, "b64_syncs_per_commit"));
        rows.push(row);
        detail.push(drow);
    }
    table(
        &[
            "engine",
            "batch 1 msg/s",
            "batch 1 commit p50 / p99 ms",
            "batch 64 msg/s",
            "batch 64 commit p50 / p99 ms",
            "batch 1024 msg/s",
            "batch 1024 commit p50 / p99 ms",
            "fsync+fdatasync per commit (batch 64, strace)",
        ],
        &rows,
    );
    println!(
        "msg/s of every round, the size of the best round, and the disk floor (append + \
         fdatasync p50, 200 samples) probed right before each round:\n"
    );
    table(
        &[
            "engine",
            "disk floor p50 ms per round",
            "batch 1",
            "batch 64",
            "batch 1024",
        ],
        &detail,
    );

    println!("### Read the last 50 messages of a random room (after loading, clean reopen)\n");
    let mut rows = Vec::new();
    for e in r.rows("history") {
        rows.push(vec![
            e.clone(),
            format!(
                "{} / {}",
                thousands(r.num("history", &e, "messages")),
                thousands(r.num("history", &e, "rooms"))
            ),
            thousands(r.num("history", &e, "load_msgs_s")),
            r.get("history", &e, "msgs_per_read"),
            r.get("history", &e, "read_p50_us"),
            r.get("history", &e, "read_p99_us"),
            r.get("history", &e, "read_max_us"),
            r.get("history", &e, "reads"),
        ]);
    }
    table(
        &[
            "engine",
            "messages / rooms",
            "load msg/s (batch 1024, fsync)",
            "msgs per read",
            "p50 µs",
            "p99 µs",
            "max µs",
            "reads",
        ],
        &rows,
    );

    println!("### Disk bytes per message (64-byte payload)\n");
    let mut rows = Vec::new();
    for e in r.rows("history") {
        rows.push(vec![
            e.clone(),
            format!(
                "{} / {}",
                thousands(r.num("history", &e, "messages")),
                thousands(r.num("history", &e, "rooms"))
            ),
            r.get("history", &e, "raw_bytes_per_msg"),
            r.get("history", &e, "closed_bytes_per_msg"),
            r.get("history", &e, "compacted_bytes_per_msg"),
            r.get("history", &e, "compacted_nojournal_bytes_per_msg"),
            r.get("history", &e, "compaction"),
            r.get("history", &e, "compaction_s"),
        ]);
    }
    table(
        &[
            "engine",
            "messages / rooms",
            "key+value bytes/msg (KV encoding)",
            "bytes/msg after close (du)",
            "bytes/msg after compaction (du)",
            "… of which tables only (fjall: without the journal)",
            "compaction",
            "compaction s",
        ],
        &rows,
    );

    println!("### Recovery after kill -9 (reopen + read one room's head; 3 trials)\n");
    let mut rows = Vec::new();
    for e in r.rows("recovery") {
        rows.push(vec![
            e.clone(),
            format!(
                "{} / {}",
                thousands(r.num("recovery", &e, "messages")),
                thousands(r.num("recovery", &e, "rooms"))
            ),
            r.get("recovery", &e, "fill"),
            r.get("recovery", &e, "median_ms"),
            format!(
                "{} – {}",
                r.get("recovery", &e, "min_ms"),
                r.get("recovery", &e, "max_ms")
            ),
            r.get("recovery", &e, "clean_median_ms"),
            r.get("recovery", &e, "dir_mb_at_kill"),
            r.get("recovery", &e, "verified"),
        ]);
    }
    table(
        &[
            "engine",
            "messages / rooms at kill",
            "writer batches",
            "median ms",
            "min – max ms",
            "clean reopen ms (median)",
            "data dir MB at kill",
            "committed batches verified",
        ],
        &rows,
    );

    println!("### Clean release build (`cargo clean` first; 2 cores)\n");
    let base = r.num("compile", "none", "secs");
    let mut rows = Vec::new();
    for e in r.rows("compile") {
        let secs = r.num("compile", &e, "secs");
        let delta = match (secs, base) {
            (Some(s), Some(b)) if e != "none" => format!("{:+.1}", s - b),
            _ => "–".to_owned(),
        };
        rows.push(vec![
            e.clone(),
            r.get("compile", &e, "secs"),
            delta,
            r.get("compile", &e, "cpu_secs"),
        ]);
    }
    table(&["features", "wall s", "wall vs. no engine", "CPU s (user+sys)"], &rows);

    println!("### Machine load at each step (1-minute load average)\n");
    let rows: Vec<Vec<String>> = r
        .rows("load")
        .iter()
        .map(|step| vec![step.clone(), r.get("load", step, "loadavg")])
        .collect();
    table(&["step", "load average"], &rows);
    Ok(())
}
