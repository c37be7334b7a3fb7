//! A load report as one self-contained HTML page.
//!
//! The page carries its own CSS and inline SVG and loads nothing, so it can be
//! attached to an issue or opened from a CI artifact years later. The report
//! is read as loose JSON rather than a typed struct: old reports and
//! scenarios without some measurements (a `connect` run has no message
//! latency) must still render, with "no data" where a value is missing.

use serde_json::Value;

/// Renders a report (see the JSON written by `herald-loadgen`) as HTML.
pub fn html_report(report: &Value) -> String {
    let scenario = text(report, &["scenario"]).unwrap_or_else(|| "report".to_owned());
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Herald load report: {s}</title><style>{STYLE}</style></head><body>\n\
         <h1>Herald load report: {s}</h1>\n",
        s = esc(&scenario)
    );
    page += &header(report);
    page += "<h2>Options</h2>\n";
    page += &options(report);
    page += "<h2>Summary</h2>\n";
    page += &summary(report);
    page += "<h2>Rate steps</h2>\n";
    page += &steps(report);
    page += &locality(report);
    page += "<h2>Charts</h2>\n";
    page += &charts(report);
    page += "</body></html>\n";
    page
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1000px}\
table{border-collapse:collapse;margin:0.5em 0 1em}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}\
.nodata{color:#888;font-style:italic}figure{margin:1em 0}figcaption{font-weight:bold}";

/// Distinguishable on white and for the common colour-vision deficiencies.
const COLORS: [&str; 4] = ["#0072b2", "#d55e00", "#009e73", "#cc79a7"];

/// Shown in a table cell whose value the report does not have.
const MISSING: &str = "—";

fn header(r: &Value) -> String {
    let targets = match get(r, &["targets"]) {
        Some(Value::Array(list)) => Some(list.iter().map(plain).collect::<Vec<_>>().join(", ")),
        _ => text(r, &["targets"]),
    };
    let tool = [text(r, &["tool"]), text(r, &["version"])];
    let tool = Some(tool.into_iter().flatten().collect::<Vec<_>>().join(" ")).filter(|s| !s.is_empty());
    let started = num(r, &["started_unix_ms"]).map(|ms| utc_time(ms).unwrap_or_else(|| fmt_num(ms)));
    kv_table(&[
        ("scenario", text(r, &["scenario"])),
        ("targets", targets),
        ("seed", text(r, &["seed"])),
        ("tool version", tool),
        ("started", started),
        ("duration", num(r, &["duration_secs"]).map(fmt_secs)),
        ("machine cores", num(r, &["machine", "cores"]).map(fmt_num)),
        ("machine memory", num(r, &["machine", "memory_bytes"]).map(fmt_bytes)),
        ("kernel", text(r, &["machine", "kernel"])),
        ("cpu model", text(r, &["machine", "cpu_model"])),
    ])
}

fn options(r: &Value) -> String {
    let Some(Value::Object(opts)) = get(r, &["options"]) else {
        return no_data();
    };
    let rows: Vec<_> = opts.iter().map(|(k, v)| (k.as_str(), Some(plain(v)))).collect();
    kv_table(&rows)
}

fn summary(r: &Value) -> String {
    let count = |path: &[&str]| num(r, path).map(fmt_num);
    let failed = count(&["connections", "failed"]).map(|n| match get(r, &["connections", "failed_by_reason"]) {
        Some(Value::Object(m)) if !m.is_empty() => {
            let why: Vec<_> = m.iter().map(|(k, v)| format!("{k}: {}", plain(v))).collect();
            format!("{n} ({})", why.join(", "))
        }
        _ => n,
    });
    let mut rows = vec![
        ("connections attempted", count(&["connections", "attempted"])),
        ("connections ok", count(&["connections", "ok"])),
        ("connections failed", failed),
        ("connections peak", count(&["connections", "peak"])),
        ("sent", count(&["sent"])),
        ("expected", count(&["expected"])),
        ("delivered", count(&["delivered"])),
        ("lost", count(&["lost"])),
        ("duplicated", count(&["duplicated"])),
        ("out of order", count(&["out_of_order"])),
        ("latency samples", count(&["latency_us", "count"])),
    ];
    for (key, label) in PERCENTILES {
        rows.push((label, num(r, &["latency_us", key]).map(fmt_us)));
    }
    rows.extend([
        ("latency mean", num(r, &["latency_us", "mean"]).map(fmt_us)),
        ("acks timed", count(&["ack_latency_us", "count"])),
        ("ack latency p50", num(r, &["ack_latency_us", "p50"]).map(fmt_us)),
        ("ack latency p99", num(r, &["ack_latency_us", "p99"]).map(fmt_us)),
        ("ack latency max", num(r, &["ack_latency_us", "max"]).map(fmt_us)),
        ("target RSS", num(r, &["target", "rss_bytes"]).map(fmt_bytes)),
        (
            "target RSS before",
            num(r, &["target", "rss_bytes_before"]).map(fmt_bytes),
        ),
        (
            "target RSS per connection",
            num(r, &["target", "rss_bytes_per_connection"]).map(fmt_bytes),
        ),
        ("target CPU", num(r, &["target", "cpu_secs"]).map(fmt_secs)),
        ("loadgen workers", count(&["loadgen", "workers"])),
        ("loadgen CPU", num(r, &["loadgen", "cpu_secs"]).map(fmt_secs)),
    ]);
    kv_table(&rows)
}

const PERCENTILES: [(&str, &str); 6] = [
    ("p50", "latency p50"),
    ("p90", "latency p90"),
    ("p99", "latency p99"),
    ("p999", "latency p99.9"),
    ("p9999", "latency p99.99"),
    ("max", "latency max"),
];

fn steps(r: &Value) -> String {
    let steps = get(r, &["rate", "steps"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let lat = |key: &str| cell(num(s, &["latency_us", key]).map(fmt_us));
            let cpu = |key: &str| cell(num(s, &[key]).map(fmt_num));
            let ratio = match (num(s, &["delivered"]), num(s, &["expected"])) {
                (None, None) => None,
                (d, e) => Some(format!("{} / {}", cell(d.map(fmt_num)), cell(e.map(fmt_num)))),
            };
            let kept_up = get(s, &["kept_up"])
                .and_then(Value::as_bool)
                .map(|k| if k { "yes" } else { "NO" }.to_owned());
            vec![
                cell(text(s, &["name"])),
                cell(num(s, &["rate"]).map(fmt_num)),
                cell(num(s, &["deliveries_per_sec"]).map(fmt_num)),
                cell(ratio),
                cell(num(s, &["lost"]).map(fmt_num)),
                lat("p50"),
                lat("p99"),
                lat("p999"),
                lat("max"),
                cell(ack_p50_p99(s)),
                cell(num(s, &["send_lag_us", "p99"]).map(fmt_us)),
                cell(kept_up),
                cpu("target_cpu_us_per_delivery"),
                cpu("loadgen_cpu_us_per_delivery"),
            ]
        })
        .collect();
    let head = [
        "step",
        "rate /s",
        "deliveries/s",
        "delivered / expected",
        "lost",
        "p50",
        "p99",
        "p99.9",
        "max",
        "ack p50/p99",
        "send lag p99",
        "kept up",
        "target CPU µs/delivery",
        "loadgen CPU µs/delivery",
    ];
    let mut out = grid_table(&head, &rows);
    let sustained = [
        (
            "max sustained deliveries/s",
            num(r, &["rate", "max_sustained_deliveries_per_sec"]),
        ),
        ("max sustained rate /s", num(r, &["rate", "max_sustained_rate"])),
    ];
    for (label, value) in sustained {
        if let Some(v) = value {
            out += &format!("<p>{label}: <b>{}</b></p>\n", esc(&fmt_num(v)));
        }
    }
    out
}

/// Whether the report has a same-node / cross-node split worth showing: a
/// run against several targets.
fn has_locality(r: &Value) -> bool {
    get(r, &["targets"])
        .and_then(Value::as_array)
        .is_some_and(|t| t.len() > 1)
        && get(r, &["locality"]).is_some_and(Value::is_object)
}

/// Same-node against cross-node deliveries, per step and over the run
/// (nothing for a run against one target).
fn locality(r: &Value) -> String {
    if !has_locality(r) {
        return String::new();
    }
    let row = |name: String, l: Option<&Value>| {
        let mut cells = vec![name];
        for side in ["same_node", "cross_node"] {
            let at = |path: &[&str]| l.and_then(|l| num(l, &[&[side][..], path].concat()));
            let ratio = match (at(&["delivered"]), at(&["expected"])) {
                (None, None) => None,
                (d, e) => Some(format!("{} / {}", cell(d.map(fmt_num)), cell(e.map(fmt_num)))),
            };
            cells.push(cell(ratio));
            for key in ["p50", "p99", "p999"] {
                cells.push(cell(at(&["latency_us", key]).map(fmt_us)));
            }
        }
        cells
    };
    let steps = get(r, &["rate", "steps"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| row(cell(text(s, &["name"])), get(s, &["locality"])))
        .collect();
    rows.push(row("all steps".to_owned(), get(r, &["locality"])));
    let head = [
        "step",
        "same node: delivered / expected",
        "p50",
        "p99",
        "p99.9",
        "cross node: delivered / expected",
        "p50",
        "p99",
        "p99.9",
    ];
    let mut out = String::from(
        "<h2>Same node vs cross node</h2>\n<p>Same node: the subscriber was on its publisher's target. \
         Cross node: on another target, so the message crossed the cluster.</p>\n",
    );
    out += &grid_table(&head, &rows);
    out
}

/// A step's publish→ack median and p99 in one cell.
fn ack_p50_p99(step: &Value) -> Option<String> {
    let p50 = num(step, &["ack_latency_us", "p50"])?;
    let p99 = num(step, &["ack_latency_us", "p99"])?;
    Some(format!("{} / {}", fmt_us(p50), fmt_us(p99)))
}

fn charts(r: &Value) -> String {
    let us = Axis::log("latency", fmt_us);
    let secs = Axis::linear("time (s)", fmt_num);
    let pct = Axis::linear("percentile", percentile_label);
    let mut spectra = vec![Series {
        name: "latency",
        points: percentile_points(get(r, &["latency_histogram"])),
    }];
    if has_locality(r) {
        for (name, side) in [("same node", "same_node"), ("cross node", "cross_node")] {
            spectra.push(Series {
                name,
                points: percentile_points(get(r, &["locality", side, "latency_histogram"])),
            });
        }
    }
    let mut out = line_chart("Latency by percentile", &pct, &us, &spectra);

    let rows = get(r, &["timeline"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let series = |name: &'static str, key: &str, scale: f64| Series {
        name,
        points: rows
            .iter()
            .filter_map(|row| Some((num(row, &["t"])?, num(row, &[key]).map(|v| v / scale))))
            .collect(),
    };
    out += &line_chart(
        "Latency over time",
        &secs,
        &us,
        &[series("p50", "p50_us", 1.0), series("p99", "p99_us", 1.0)],
    );
    let per_sec = Axis::linear("per second", fmt_num);
    let dt = sample_interval(rows);
    out += &line_chart(
        "Throughput",
        &secs,
        &per_sec,
        &[series("sent", "sent", dt), series("delivered", "delivered", dt)],
    );
    let conns = Axis::linear("connections", fmt_num);
    out += &line_chart(
        "Connections",
        &secs,
        &conns,
        &[series("connections", "connections", 1.0)],
    );
    // Sampled from /proc once a second when `--target-pid` is given.
    out += &line_chart(
        "Target memory (RSS)",
        &secs,
        // In MiB so the ticks land on round numbers of the unit shown.
        &Axis::linear("MiB", fmt_num),
        &[series("RSS", "target_rss_bytes", 1024.0 * 1024.0)],
    );
    out += &line_chart(
        "Target CPU",
        &secs,
        &Axis::linear("% of one core", fmt_num),
        &[series("CPU", "target_cpu_percent", 1.0)],
    );

    if get(r, &["connect_latency_us"]).is_some_and(Value::is_object) {
        let mut rows = vec![("samples", num(r, &["connect_latency_us", "count"]).map(fmt_num))];
        for (key, label) in PERCENTILES {
            rows.push((
                label.trim_start_matches("latency "),
                num(r, &["connect_latency_us", key]).map(fmt_us),
            ));
        }
        rows.push(("mean", num(r, &["connect_latency_us", "mean"]).map(fmt_us)));
        out += "<h3>Connect latency</h3>\n";
        out += &kv_table(&rows);
    }
    out
}

/// Timeline rows count events per sampling interval; dividing by the
/// interval keeps the throughput axis in events per second whatever
/// interval the run used.
fn sample_interval(rows: &[Value]) -> f64 {
    let ts: Vec<f64> = rows.iter().filter_map(|row| num(row, &["t"])).collect();
    match (ts.first(), ts.last()) {
        (Some(first), Some(last)) if ts.len() > 1 && last > first => (last - first) / (ts.len() - 1) as f64,
        _ => 1.0,
    }
}

/// Where the percentile axis ends: 99.999%, as far as typical runs resolve.
const X_MAX: f64 = 5.0;

/// The percentile spectrum as a step line: each histogram bucket's value
/// spans the percentiles it covers. x is log10(1/(1-q)), so 90%, 99%, 99.9%…
/// are evenly spaced and the tail, which is what matters, gets the width.
fn percentile_points(hist: Option<&Value>) -> Vec<(f64, Option<f64>)> {
    let mut buckets: Vec<(f64, f64)> = hist
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|pair| {
            let value = pair.get(0)?.as_f64()?;
            let count = pair.get(1)?.as_f64()?;
            (value.is_finite() && count.is_finite() && count > 0.0).then_some((value, count))
        })
        .collect();
    // Sorting here rather than trusting the writer keeps the line monotonic.
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = buckets.iter().map(|b| b.1).sum();
    if !total.is_finite() {
        return Vec::new();
    }
    let x = |q: f64| {
        if q >= 1.0 {
            X_MAX
        } else {
            (-(1.0 - q).log10()).clamp(0.0, X_MAX)
        }
    };
    let mut seen = 0.0;
    let mut points = Vec::with_capacity(buckets.len() * 2);
    let last = buckets.len().saturating_sub(1);
    for (i, (value, count)) in buckets.into_iter().enumerate() {
        points.push((x(seen / total), Some(value)));
        seen += count;
        // The float sum may land a hair under the total; the last bucket is the maximum.
        points.push((if i == last { X_MAX } else { x(seen / total) }, Some(value)));
    }
    points
}

fn percentile_label(x: f64) -> String {
    format!("{}%", sig(100.0 * (1.0 - 10f64.powf(-x)), 6))
}

struct Series<'a> {
    name: &'a str,
    /// `None` breaks the line (e.g. a second without latency samples).
    points: Vec<(f64, Option<f64>)>,
}

struct Axis {
    label: &'static str,
    log: bool,
    fmt: fn(f64) -> String,
}

impl Axis {
    fn linear(label: &'static str, fmt: fn(f64) -> String) -> Self {
        Self { label, log: false, fmt }
    }

    fn log(label: &'static str, fmt: fn(f64) -> String) -> Self {
        Self { label, log: true, fmt }
    }
}

const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 35.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;

fn line_chart(title: &str, x: &Axis, y: &Axis, series: &[Series<'_>]) -> String {
    let caption = format!("<figure><figcaption>{}</figcaption>", esc(title));
    let xs = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| p.1.is_some()).map(|p| p.0))
    };
    let ys = || series.iter().flat_map(|s| s.points.iter().filter_map(|p| p.1));
    let (Some(sx), Some(sy)) = (Scale::new(xs(), x.log, false), Scale::new(ys(), y.log, true)) else {
        return format!("{caption}{}</figure>\n", no_data());
    };
    let px = |v: f64| LEFT + sx.frac(v) * (W - LEFT - RIGHT);
    let py = |v: f64| H - BOTTOM - sy.frac(v) * (H - TOP - BOTTOM);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-size=\"11\" font-family=\"sans-serif\">\n"
    );
    for t in &sy.ticks {
        let y0 = py(*t);
        svg += &format!(
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            W - RIGHT,
            LEFT - 5.0,
            y0 + 4.0,
            esc(&(y.fmt)(*t))
        );
    }
    for t in &sx.ticks {
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            px(*t),
            H - BOTTOM + 15.0,
            esc(&(x.fmt)(*t))
        );
    }
    svg += &format!(
        "<path d=\"M{LEFT} {TOP}V{b}H{r}\" fill=\"none\" stroke=\"#444\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}{}</text>\n",
        (LEFT + W - RIGHT) / 2.0,
        H - 8.0,
        esc(x.label),
        (TOP + H - BOTTOM) / 2.0,
        esc(y.label),
        if y.log { " (log)" } else { "" },
        b = H - BOTTOM,
        r = W - RIGHT,
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let (mut path, mut run, mut dots) = (String::new(), Vec::new(), String::new());
        // Trailing `None` flushes the last run.
        for p in s.points.iter().copied().chain([(0.0, None)]) {
            match p {
                (vx, Some(vy)) => run.push((px(vx), py(vy))),
                (_, None) => {
                    if let [(x0, y0)] = run[..] {
                        // A lone sample has no line to be part of, so it gets a dot.
                        dots += &format!("<circle cx=\"{x0:.1}\" cy=\"{y0:.1}\" r=\"2.5\" fill=\"{color}\"/>");
                    } else {
                        for (j, (x0, y0)) in run.iter().enumerate() {
                            path += &format!("{}{x0:.1} {y0:.1}", if j == 0 { "M" } else { "L" });
                        }
                    }
                    run.clear();
                }
            }
        }
        let lx = LEFT + 10.0 + 110.0 * i as f64;
        svg += &format!(
            "<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>{dots}\n\
             <line x1=\"{lx}\" x2=\"{:.1}\" y1=\"14\" y2=\"14\" stroke=\"{color}\" stroke-width=\"3\"/>\
             <text x=\"{:.1}\" y=\"18\">{}</text>\n",
            lx + 18.0,
            lx + 22.0,
            esc(s.name)
        );
    }
    format!("{caption}{svg}</svg></figure>\n")
}

/// Maps data values onto [0, 1] along an axis, linear or log10.
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<f64>,
}

impl Scale {
    fn new(values: impl Iterator<Item = f64>, log: bool, include_zero: bool) -> Option<Self> {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite()) {
            let v = if log { Self::log(v) } else { v };
            (min, max) = (min.min(v), max.max(v));
        }
        if min > max {
            return None;
        }
        if log {
            let (lo, hi) = (min.floor(), max.ceil().max(min.floor() + 1.0));
            // A wide range would crowd the axis with a label per decade.
            let stride = ((hi - lo) / 6.0).ceil().max(1.0);
            let ticks = (0..=6)
                .map(|i| lo + stride * f64::from(i))
                .take_while(|e| *e <= hi)
                .map(|e| 10f64.powf(e));
            return Some(Self {
                lo,
                hi,
                log,
                ticks: ticks.collect(),
            });
        }
        if include_zero {
            (min, max) = (min.min(0.0), max.max(0.0));
        }
        if max == min {
            max = min + 1.0;
        }
        let step = nice_step((max - min) / 5.0);
        let (lo, hi) = ((min / step).floor() * step, (max / step).ceil() * step);
        let n = ((hi - lo) / step).round();
        if !(lo.is_finite() && hi.is_finite() && n.is_finite() && n <= 20.0 && hi > lo) {
            // Only absurd inputs (spans near f64::MAX) land here: draw without tick steps.
            let ticks = if max.is_finite() && min.is_finite() && max > min {
                vec![min, max]
            } else {
                Vec::new()
            };
            return Some(Self {
                lo: min,
                hi: max,
                log,
                ticks,
            });
        }
        let ticks = (0..=n as u32).map(|i| lo + step * f64::from(i)).collect();
        Some(Self { lo, hi, log, ticks })
    }

    /// Latencies can be 0 µs after rounding; clamp so the log stays finite.
    fn log(v: f64) -> f64 {
        v.max(1.0).log10()
    }

    fn frac(&self, v: f64) -> f64 {
        let v = if self.log { Self::log(v) } else { v };
        let f = (v - self.lo) / (self.hi - self.lo);
        if f.is_finite() { f.clamp(0.0, 1.0) } else { 0.0 }
    }
}

/// The smallest 1, 2 or 5 × 10^k at least `raw`, so ticks land on round numbers.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    step * mag
}

fn kv_table(rows: &[(&str, Option<String>)]) -> String {
    if rows.iter().all(|r| r.1.is_none()) {
        return no_data();
    }
    let mut out = String::from("<table>\n");
    for (k, v) in rows {
        out += &format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            esc(k),
            esc(v.as_deref().unwrap_or(MISSING))
        );
    }
    out + "</table>\n"
}

fn grid_table(head: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return no_data();
    }
    let mut out = String::from("<table>\n<tr>");
    for h in head {
        out += &format!("<th>{}</th>", esc(h));
    }
    out += "</tr>\n";
    for row in rows {
        out += "<tr>";
        for c in row {
            out += &format!("<td class=\"n\">{}</td>", esc(c));
        }
        out += "</tr>\n";
    }
    out + "</table>\n"
}

fn no_data() -> String {
    "<p class=\"nodata\">no data</p>\n".to_owned()
}

fn cell(v: Option<String>) -> String {
    v.unwrap_or_else(|| MISSING.to_owned())
}

// `get`, `num` and the `fmt_*` helpers are shared with `compare`, so the
// terminal table and the page read reports and print numbers alike.
pub(crate) fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

pub(crate) fn num(v: &Value, path: &[&str]) -> Option<f64> {
    get(v, path).and_then(Value::as_f64).filter(|n| n.is_finite())
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    get(v, path).map(plain).filter(|s| !s.is_empty())
}

/// Strings without their JSON quotes; anything else as compact JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `digits` significant digits, without trailing zeros.
fn sig(x: f64, digits: i32) -> String {
    let decimals = if x == 0.0 {
        0
    } else {
        (digits - 1 - x.abs().log10().floor() as i32).clamp(0, 9)
    };
    let s = format!("{x:.*}", decimals as usize);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Large numbers grouped in thousands, small ones to three significant digits.
pub(crate) fn fmt_num(x: f64) -> String {
    if x.abs() < 1000.0 {
        return sig(x, 3);
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

pub(crate) fn fmt_us(us: f64) -> String {
    match us.abs() {
        a if a < 1e3 => format!("{} µs", sig(us, 3)),
        a if a < 1e6 => format!("{} ms", sig(us / 1e3, 3)),
        _ => format!("{} s", fmt_num(us / 1e6)),
    }
}

pub(crate) fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b.abs() < 1024.0 {
        return format!("{} B", sig(b, 3));
    }
    let mut v = b / 1024.0;
    for unit in &UNITS[..3] {
        if v.abs() < 1024.0 {
            return format!("{} {unit}", sig(v, 3));
        }
        v /= 1024.0;
    }
    format!("{} {}", fmt_num(v), UNITS[3])
}

fn fmt_secs(s: f64) -> String {
    format!("{} s", fmt_num(s))
}

/// `YYYY-MM-DD HH:MM:SS UTC`, or `None` outside years 1970–9999.
fn utc_time(ms: f64) -> Option<String> {
    if !(0.0..253_402_300_800_000.0).contains(&ms) {
        return None;
    }
    let secs = (ms / 1000.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> Value {
        json!({
            "schema": 1, "tool": "herald-loadgen", "version": "0.1.0", "scenario": "fanout",
            "targets": ["ws://127.0.0.1:8080/ws"], "seed": 42,
            "options": {"rooms": 10, "payload": 64, "mode": "open"},
            "machine": {"cores": 2, "memory_bytes": 25_000_000_000_u64, "kernel": "6.1.0", "cpu_model": "AMD EPYC"},
            "started_unix_ms": 1_790_000_000_000_u64, "duration_secs": 12.5,
            "connections": {"attempted": 100, "ok": 98, "failed": 2, "failed_by_reason": {"refused": 2}, "peak": 98},
            "connect_latency_us": {"count": 98, "p50": 800, "p90": 1200, "p99": 3000, "p999": 3100, "p9999": 3100, "max": 3100, "mean": 900.5},
            "ack_latency_us": {"count": 1000, "p50": 900, "p90": 1200, "p99": 1700, "max": 2000},
            "latency_us": {"count": 9990, "p50": 700, "p90": 1500, "p99": 2500, "p999": 40000, "p9999": 1_200_000, "max": 2_500_000, "mean": 800.0},
            "latency_histogram": [[500, 4000], [700, 3000], [1500, 2000], [2500, 900], [40000, 89], [2_500_000, 1]],
            "sent": 1000, "expected": 10000, "delivered": 9990, "lost": 10, "duplicated": 0, "out_of_order": 0,
            "rate": {"steps": [{"name": "500/s", "rate": 500.0, "deliveries_per_sec": 5000.0, "delivered": 25000,
                                "expected": 25000, "lost": 0, "latency_us": {"p50": 600, "p99": 2000, "p999": 3000, "max": 9000},
                                "kept_up": true, "target_cpu_us_per_delivery": 12.5, "loadgen_cpu_us_per_delivery": null,
                                "send_lag_us": {"p50": 12, "p99": 734, "max": 900},
                                "ack_latency_us": {"count": 500, "p50": 1250, "p99": 4100, "max": 5000}}],
                     "max_sustained_deliveries_per_sec": 5000.0, "max_sustained_rate": 500.0},
            "timeline": [
                {"t": 0, "connections": 50, "sent": 500, "delivered": 5000, "p50_us": 700, "p99_us": 1800, "errors": 0,
                 "target_rss_bytes": 10_000_000, "target_cpu_percent": null},
                {"t": 1, "connections": 100, "sent": 500, "delivered": 4990, "p50_us": null, "p99_us": null, "errors": 0,
                 "target_rss_bytes": 20_000_000, "target_cpu_percent": 85.5},
                {"t": 2, "connections": 100, "sent": 0, "delivered": 0, "p50_us": 650, "p99_us": 1700, "errors": 0,
                 "target_rss_bytes": 30_000_000, "target_cpu_percent": 40.0}
            ],
            "target": {"pids": [1234], "rss_bytes": 30_000_000, "rss_bytes_before": 10_000_000, "rss_bytes_per_connection": 950.0, "cpu_secs": 3.2},
            "loadgen": {"workers": 1, "cpu_secs": 2.1}
        })
    }

    #[test]
    fn full_report_has_one_svg_per_chart_and_the_key_numbers() {
        let html = html_report(&full());
        assert_eq!(html.matches("<svg").count(), 6);
        assert_eq!(html.matches("</svg>").count(), 6);
        assert!(!html.contains("no data"), "{html}");
        for needle in [
            "2026-09-21 14:13:20 UTC",
            "AMD EPYC",
            "23.3 GiB",
            "2 (refused: 2)",
            "9,990",
            "2.5 ms",
            "1.2 s",
            "28.6 MiB",
            "950 B",
            "<th>mode</th><td>open</td>",
            "max sustained deliveries/s: <b>5,000</b>",
            "<h3>Connect latency</h3>",
            "99.999%",
            "<figcaption>Target memory (RSS)</figcaption><svg",
            "<figcaption>Target CPU</figcaption><svg",
            "<th>send lag p99</th>",
            "<td class=\"n\">734 µs</td>",
            "<th>ack p50/p99</th>",
            "<td class=\"n\">1.25 ms / 4.1 ms</td>",
            "<tr><th>ack latency p99</th><td>1.7 ms</td></tr>",
        ] {
            assert!(html.contains(needle), "missing {needle:?}");
        }
        assert!(!html.contains("NaN") && !html.contains("inf"));
    }

    #[test]
    fn several_targets_get_a_same_and_cross_node_table_and_spectra() {
        let side = |d: u64, p99: u64, hist: Value| {
            json!({"expected": 1000, "delivered": d, "lost": 1000 - d,
                   "latency_us": {"count": d, "p50": 400, "p99": p99, "p999": p99 * 2},
                   "latency_histogram": hist})
        };
        let mut r = full();
        r["targets"] = json!(["ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws"]);
        r["locality"] = json!({"same_node": side(1000, 900, json!([[400, 1000]])),
                               "cross_node": side(990, 4_500, json!([[2000, 990]]))});
        r["rate"]["steps"][0]["locality"] = r["locality"].clone();
        let html = html_report(&r);
        for needle in [
            "<h2>Same node vs cross node</h2>",
            "<th>cross node: delivered / expected</th>",
            "<td class=\"n\">990 / 1,000</td>",
            "<td class=\"n\">4.5 ms</td><td class=\"n\">9 ms</td>",
            "<td class=\"n\">all steps</td>",
            ">same node</text>",
            ">cross node</text>",
        ] {
            assert!(html.contains(needle), "missing {needle:?}");
        }
        assert_eq!(html.matches("<svg").count(), 6, "same charts, more series");
        // One target: no split shown.
        r["targets"] = json!(["ws://127.0.0.1:1/ws"]);
        let html = html_report(&r);
        assert!(!html.contains("Same node vs cross node") && !html.contains(">cross node</text>"));
    }

    #[test]
    fn report_strings_are_escaped() {
        let mut r = full();
        r["targets"] = json!(["<script>alert(1)</script>"]);
        r["options"] = json!({"<b>": "\"x\" & 'y'"});
        let html = html_report(&r);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<th>&lt;b&gt;</th><td>&quot;x&quot; &amp; &#39;y&#39;</td>"));
    }

    #[test]
    fn empty_report_says_no_data_everywhere() {
        let html = html_report(&json!({}));
        assert_eq!(html.matches("<svg").count(), 0);
        // Header, options, summary, steps and the six charts.
        assert_eq!(html.matches("no data").count(), 10);
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn connect_only_report_draws_only_what_it_has() {
        let r = json!({
            "scenario": "connect", "targets": "ws://a/ws",
            "connections": {"attempted": 3, "ok": 3, "failed": 0, "failed_by_reason": {}},
            "connect_latency_us": {"count": 3, "p50": 900, "max": 1500},
            "latency_us": null, "latency_histogram": [], "rate": {"steps": []},
            "timeline": [{"t": 0, "connections": 2, "sent": 0, "delivered": 0, "p50_us": null, "p99_us": null},
                         {"t": 1, "connections": 3, "sent": 0, "delivered": 0, "p50_us": null, "p99_us": null}]
        });
        let html = html_report(&r);
        // Throughput (all zeros) and connections have data; both latency
        // charts and the target's (no `--target-pid`) do not.
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(
            html.contains("<figcaption>Target memory (RSS)</figcaption><p"),
            "{html}"
        );
        assert!(html.contains("<th>connections failed</th><td>0</td>"));
        assert!(html.contains("<th>p50</th><td>900 µs</td>"));
        assert!(html.contains("<th>targets</th><td>ws://a/ws</td>"));
    }

    #[test]
    fn wrong_types_and_extreme_numbers_do_not_panic() {
        let r = json!({
            "scenario": 7, "targets": {"a": 1}, "options": [1, 2], "started_unix_ms": -5,
            "machine": "big", "connections": [], "latency_us": {"p50": "fast", "max": -3.0},
            "latency_histogram": [[1e308, 1e308], [-1e308, 1e308], "x", [1], [5, -1]],
            "rate": {"steps": [null, 3, {"name": ["x"], "latency_us": 1}]},
            "timeline": [{"t": -1e308, "sent": 1e308, "connections": 1e308, "p50_us": 0}, {"t": 1e308, "sent": -1e308}, {"t": "x"}],
            "target": {"rss_bytes": 1e300}
        });
        let html = html_report(&r);
        assert!(html.ends_with("</html>\n"));
        assert!(html.contains("-5"));
    }

    #[test]
    fn percentile_points_are_monotonic_and_end_at_the_max() {
        let hist = json!([
            [2500, 910],
            [500, 4000],
            [700, 3000],
            [1500, 2000],
            [40000, 89],
            [2_500_000, 1],
            [0, 0]
        ]);
        let pts = percentile_points(Some(&hist));
        assert_eq!(pts.len(), 12);
        assert_eq!(pts[0], (0.0, Some(500.0)));
        assert_eq!(pts.last(), Some(&(X_MAX, Some(2_500_000.0))));
        for w in pts.windows(2) {
            assert!(w[0].0 <= w[1].0 && w[0].1 <= w[1].1, "{w:?}");
        }
        // 4000 of 10000 samples at 500 µs: that bucket ends at q = 0.4.
        assert!((pts[1].0 - (1.0 / 0.6f64).log10()).abs() < 1e-12);
        assert!(percentile_points(Some(&json!([[1, 0]]))).is_empty());
        assert!(percentile_points(None).is_empty());
    }

    #[test]
    fn human_units() {
        assert_eq!(fmt_us(0.0), "0 µs");
        assert_eq!(fmt_us(850.0), "850 µs");
        assert_eq!(fmt_us(1000.0), "1 ms");
        assert_eq!(fmt_us(12_345.0), "12.3 ms");
        assert_eq!(fmt_us(2_500_000.0), "2.5 s");
        assert_eq!(fmt_us(1_234_567_890.0), "1,235 s");
        assert_eq!(fmt_num(1_234_567.0), "1,234,567");
        assert_eq!(fmt_num(-1234.0), "-1,234");
        assert_eq!(fmt_num(100.0), "100");
        assert_eq!(fmt_num(12.5), "12.5");
        assert_eq!(fmt_bytes(950.0), "950 B");
        assert_eq!(fmt_bytes(30_000_000.0), "28.6 MiB");
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(utc_time(0.0).as_deref(), Some("1970-01-01 00:00:00 UTC"));
        assert_eq!(utc_time(951_782_400_000.0).as_deref(), Some("2000-02-29 00:00:00 UTC"));
        assert_eq!(utc_time(-1.0), None);
    }

    #[test]
    fn log_axis_ticks_are_decades() {
        let s = Scale::new([3.0, 40_000.0].into_iter(), true, false).unwrap();
        assert_eq!(s.ticks, vec![1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0]);
        let s = Scale::new([0.0, 5.0].into_iter(), false, false).unwrap();
        assert_eq!(s.ticks, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(s.frac(2.5), 0.5);
    }
}
