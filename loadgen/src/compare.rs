//! Two load reports side by side, as a plain-text table for the terminal.
//!
//! Numbers print through the same helpers as the HTML report, so a latency
//! reads the same in both places.

use std::path::Path;

use serde_json::Value;

use crate::html::{fmt_bytes, fmt_num, fmt_us, get, num};

/// Reads a report written by `herald-loadgen`; the error names the file.
pub fn load_report(path: &Path) -> Result<Value, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read report {shown}: {e}"))?;
    let report: Value = serde_json::from_str(&text).map_err(|e| format!("report {shown} is not valid JSON: {e}"))?;
    if !report.is_object() {
        return Err(format!(
            "report {shown} is not a herald-loadgen report: expected a JSON object"
        ));
    }
    Ok(report)
}

/// Compares report `b` against `a`: metric | A | B | B/A.
pub fn compare(a: &Value, b: &Value, a_name: &str, b_name: &str) -> String {
    let mut rows = vec![
        Row::text("scenario", a, b, &["scenario"]),
        Row::text("targets", a, b, &["targets"]),
    ];
    let metrics: [(&str, &[&str], Fmt); 23] = [
        ("connections ok", &["connections", "ok"], fmt_num),
        ("connections failed", &["connections", "failed"], fmt_num),
        ("delivered", &["delivered"], fmt_num),
        ("expected", &["expected"], fmt_num),
        ("lost", &["lost"], fmt_num),
        ("duplicated", &["duplicated"], fmt_num),
        ("out of order", &["out_of_order"], fmt_num),
        ("latency p50", &["latency_us", "p50"], fmt_us),
        ("latency p90", &["latency_us", "p90"], fmt_us),
        ("latency p99", &["latency_us", "p99"], fmt_us),
        ("latency p99.9", &["latency_us", "p999"], fmt_us),
        ("latency max", &["latency_us", "max"], fmt_us),
        // Several targets: subscribers on the publisher's node or another.
        ("same-node p50", &["locality", "same_node", "latency_us", "p50"], fmt_us),
        ("same-node p99", &["locality", "same_node", "latency_us", "p99"], fmt_us),
        (
            "cross-node p50",
            &["locality", "cross_node", "latency_us", "p50"],
            fmt_us,
        ),
        (
            "cross-node p99",
            &["locality", "cross_node", "latency_us", "p99"],
            fmt_us,
        ),
        ("cross-node lost", &["locality", "cross_node", "lost"], fmt_num),
        ("ack latency p50", &["ack_latency_us", "p50"], fmt_us),
        ("ack latency p99", &["ack_latency_us", "p99"], fmt_us),
        ("target RSS", &["target", "rss_bytes"], fmt_bytes),
        (
            "target RSS per connection",
            &["target", "rss_bytes_per_connection"],
            fmt_bytes,
        ),
        (
            "max sustained deliveries/s",
            &["rate", "max_sustained_deliveries_per_sec"],
            fmt_num,
        ),
        ("max sustained rate /s", &["rate", "max_sustained_rate"], fmt_num),
    ];
    for (label, path, fmt) in metrics {
        rows.push(Row::num(label.to_owned(), num(a, path), num(b, path), fmt));
    }

    // Steps pair up by name so runs with different rate ladders still line
    // up; a step only one side ran keeps its row, with "-" on the other.
    let (steps_a, steps_b) = (steps(a), steps(b));
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in steps_a.iter().chain(&steps_b) {
        if !names.contains(name) {
            names.push(name);
        }
    }
    let find = |steps: &[(&str, &Value)], name: &str, key: &[&str]| {
        steps.iter().find(|s| s.0 == name).and_then(|s| num(s.1, key))
    };
    for name in names {
        for (what, key, fmt) in [
            ("deliveries/s", &["deliveries_per_sec"][..], fmt_num as Fmt),
            ("p99", &["latency_us", "p99"][..], fmt_us),
            ("ack p99", &["ack_latency_us", "p99"][..], fmt_us),
        ] {
            let (va, vb) = (find(&steps_a, name, key), find(&steps_b, name, key));
            rows.push(Row::num(format!("step {} {what}", clean(name)), va, vb, fmt));
        }
    }
    render(&rows, &clean(a_name), &clean(b_name))
}

type Fmt = fn(f64) -> String;

struct Row {
    metric: String,
    a: String,
    b: String,
    ratio: String,
}

impl Row {
    fn text(metric: &str, a: &Value, b: &Value, path: &[&str]) -> Self {
        let show = |r: &Value| {
            get(r, path)
                .filter(|v| !v.is_null())
                .map_or_else(|| "-".to_owned(), |v| clip(clean(&plain(v))))
        };
        Self {
            metric: metric.to_owned(),
            a: show(a),
            b: show(b),
            ratio: "-".to_owned(),
        }
    }

    fn num(metric: String, a: Option<f64>, b: Option<f64>, fmt: Fmt) -> Self {
        let ratio = match (a, b) {
            (Some(a), Some(b)) if a != 0.0 && (b / a).is_finite() => format!("{:.2}", b / a),
            _ => "-".to_owned(),
        };
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), fmt);
        Self {
            metric,
            a: show(a),
            b: show(b),
            ratio,
        }
    }
}

fn render(rows: &[Row], a_name: &str, b_name: &str) -> String {
    let head = Row {
        metric: "metric".to_owned(),
        a: a_name.to_owned(),
        b: b_name.to_owned(),
        ratio: "B/A".to_owned(),
    };
    // Width in chars, not bytes: "µs" would otherwise misalign its column.
    let width = |col: fn(&Row) -> &str| {
        rows.iter()
            .chain([&head])
            .map(|r| col(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let w = [
        width(|r| &r.metric),
        width(|r| &r.a),
        width(|r| &r.b),
        width(|r| &r.ratio),
    ];
    let line = |r: &Row| {
        format!(
            "{:<w0$} | {:>w1$} | {:>w2$} | {:>w3$}\n",
            r.metric,
            r.a,
            r.b,
            r.ratio,
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
    };
    let rule = w.iter().map(|n| "-".repeat(*n)).collect::<Vec<_>>().join("-+-");
    let mut out = line(&head) + &rule + "\n";
    for r in rows {
        out += &line(r);
    }
    out
}

fn steps(r: &Value) -> Vec<(&str, &Value)> {
    let steps = get(r, &["rate", "steps"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    steps
        .iter()
        .filter_map(|s| Some((s.get("name")?.as_str()?, s)))
        .collect()
}

/// Strings without their JSON quotes; lists joined; anything else as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Keeps one long value (many targets) from pushing every number off screen.
const TEXT_WIDTH: usize = 40;

fn clip(s: String) -> String {
    if s.chars().count() <= TEXT_WIDTH {
        return s;
    }
    s.chars().take(TEXT_WIDTH - 1).chain(['…']).collect()
}

/// Report strings reach the terminal; control characters could move the
/// cursor or recolour it, and would break the column widths.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(delivered: u64, p99: u64, steps: Value) -> Value {
        json!({
            "scenario": "fanout", "targets": ["ws://127.0.0.1:8080/ws"],
            "connections": {"ok": 98, "failed": 0},
            "delivered": delivered, "expected": 10000, "lost": 10, "duplicated": 0, "out_of_order": 0,
            "latency_us": {"p50": 850, "p90": 1200, "p99": p99, "p999": 40000, "max": 2_500_000},
            "target": {"rss_bytes": 30_000_000, "rss_bytes_per_connection": 950.0},
            "rate": {"steps": steps, "max_sustained_deliveries_per_sec": null}
        })
    }

    /// The cells of the row whose metric is `metric`.
    fn row(table: &str, metric: &str) -> Vec<String> {
        let line = table
            .lines()
            .find(|l| l.split('|').next().map(str::trim) == Some(metric));
        line.unwrap_or_else(|| panic!("no row {metric:?} in\n{table}"))
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    }

    #[test]
    fn ratios_units_and_missing_values() {
        let a = report(
            8000,
            2500,
            json!([{"name": "500/s", "deliveries_per_sec": 5000.0, "latency_us": {"p99": 2000},
                    "ack_latency_us": {"p50": 100, "p99": 400}}]),
        );
        let mut b = report(
            10000,
            5000,
            json!([
                {"name": "500/s", "deliveries_per_sec": 7500.0, "latency_us": {"p99": 1000},
                 "ack_latency_us": {"p50": 2000, "p99": 6000}},
                {"name": "2000/s", "deliveries_per_sec": 19000.0, "latency_us": {"p99": 90000}}
            ]),
        );
        b["ack_latency_us"] = json!({"p50": 2000, "p99": 6000});
        let t = compare(&a, &b, "main", "branch");
        assert_eq!(row(&t, "metric"), ["metric", "main", "branch", "B/A"]);
        // A memory node against a durable one: the acks wait for the fsync.
        assert_eq!(row(&t, "ack latency p99"), ["ack latency p99", "-", "6 ms", "-"]);
        assert_eq!(
            row(&t, "step 500/s ack p99"),
            ["step 500/s ack p99", "400 µs", "6 ms", "15.00"]
        );
        assert_eq!(row(&t, "delivered"), ["delivered", "8,000", "10,000", "1.25"]);
        assert_eq!(row(&t, "latency p50"), ["latency p50", "850 µs", "850 µs", "1.00"]);
        assert_eq!(row(&t, "latency p99"), ["latency p99", "2.5 ms", "5 ms", "2.00"]);
        assert_eq!(row(&t, "latency max"), ["latency max", "2.5 s", "2.5 s", "1.00"]);
        assert_eq!(row(&t, "target RSS"), ["target RSS", "28.6 MiB", "28.6 MiB", "1.00"]);
        assert_eq!(row(&t, "target RSS per connection")[1], "950 B");
        assert_eq!(
            row(&t, "targets"),
            ["targets", "ws://127.0.0.1:8080/ws", "ws://127.0.0.1:8080/ws", "-"]
        );
        // A is zero: no ratio.
        assert_eq!(row(&t, "duplicated"), ["duplicated", "0", "0", "-"]);
        // Null on both sides.
        assert_eq!(
            row(&t, "max sustained deliveries/s"),
            ["max sustained deliveries/s", "-", "-", "-"]
        );
        assert_eq!(
            row(&t, "step 500/s deliveries/s"),
            ["step 500/s deliveries/s", "5,000", "7,500", "1.50"]
        );
        assert_eq!(row(&t, "step 500/s p99"), ["step 500/s p99", "2 ms", "1 ms", "0.50"]);
        // Only B ran this step.
        assert_eq!(
            row(&t, "step 2000/s deliveries/s"),
            ["step 2000/s deliveries/s", "-", "19,000", "-"]
        );
        assert_eq!(row(&t, "step 2000/s p99"), ["step 2000/s p99", "-", "90 ms", "-"]);
    }

    #[test]
    fn columns_line_up() {
        let a = report(8000, 2500, json!([]));
        let t = compare(&a, &json!({}), "a", "b\x1b[31m");
        let widths: Vec<usize> = t.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{t}");
        let pipes: Vec<Vec<usize>> = t
            .lines()
            .map(|l| l.chars().enumerate().filter(|c| c.1 == '|').map(|c| c.0).collect())
            .collect();
        assert!(pipes.iter().skip(2).all(|p| *p == pipes[0]), "{t}");
        assert!(!t.contains('\x1b'));
        assert_eq!(row(&t, "scenario"), ["scenario", "fanout", "-", "-"]);
        let t = compare(&json!({"scenario": null}), &json!({"scenario": "chat"}), "a", "b");
        assert_eq!(row(&t, "scenario"), ["scenario", "-", "chat", "-"]);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let weird = json!({"delivered": "lots", "latency_us": [1], "rate": {"steps": [null, {"name": 5}, {"name": "x"}]},
                           "lost": 1e-300, "expected": -1e308});
        let huge = json!({"delivered": 1e308, "lost": 1e308, "expected": 1e308, "rate": 7});
        let t = compare(&weird, &huge, "", "");
        assert_eq!(row(&t, "delivered"), ["delivered", "-", &fmt_num(1e308), "-"]);
        // 1e308 / 1e-300 overflows: shown as no ratio rather than "inf".
        assert_eq!(row(&t, "lost")[3], "-");
        assert_eq!(row(&t, "expected")[3], "-1.00");
        assert_eq!(row(&t, "step x p99"), ["step x p99", "-", "-", "-"]);
        assert!(compare(&json!(null), &json!([]), "a", "b").contains("connections ok"));

        let many = json!({"targets": ["ws://10.0.0.1:8080/ws", "ws://10.0.0.2:8080/ws", "ws://10.0.0.3:8080/ws"]});
        let t = compare(&many, &json!({"targets": "ws://b/ws"}), "a", "b");
        assert_eq!(
            row(&t, "targets"),
            ["targets", "ws://10.0.0.1:8080/ws, ws://10.0.0.2:80…", "ws://b/ws", "-"]
        );
    }

    #[test]
    fn load_report_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("herald-compare-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"scenario": "fanout"}"#).unwrap();
        assert_eq!(load_report(&good).unwrap()["scenario"], "fanout");

        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"scenario\": }").unwrap();
        let err = load_report(&bad).unwrap_err();
        assert!(
            err.contains("bad.json") && err.contains("not valid JSON") && err.contains("line 1"),
            "{err}"
        );

        let list = dir.join("list.json");
        std::fs::write(&list, "[1, 2]").unwrap();
        assert!(load_report(&list).unwrap_err().contains("expected a JSON object"));

        let err = load_report(&dir.join("missing.json")).unwrap_err();
        assert!(
            err.starts_with("cannot read report") && err.contains("missing.json"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
