#!/usr/bin/env python3
"""Redis's cost per publish over the steady part of a load step.

Reading Redis's INFO once before and once after a loadgen run (as
socketio-cluster.sh does) counts the whole run: for Herald that includes
every subscriber's follow and presence join and leave, which at low rates
outweigh the publishes. This samples INFO several times a second instead,
and divides what Redis did between two samples inside the step by the
publishes scheduled between them.

Usage:
  redis_window.py sample PORT OUT.jsonl [--every SECS] [--metrics URL,URL...]
      Appends one JSON line per sample until SIGTERM: the time, Redis's
      counters (commands by name, total commands, bytes in and out, CPU),
      the size of the INFO reply itself (so the sampler's own traffic can
      be taken out), and with --metrics the herald_redis_* counters of
      each node (commands, round trips, publishes) summed.
  redis_window.py window SAMPLES.jsonl STDERR REPORT.json OUT.json
      STDERR is the loadgen's progress output, each line prefixed with
      the Unix time it was read (`connected N/M` marks the end of the
      connects; the step starts 50 ms later, docs/LOADGEN.md). Writes,
      for the whole run (first to last sample) and for the steady window
      (from 1 s after the step's start to 0.5 s before its end): the
      commands by name, the total, bytes in/out, CPU (all threads and
      main thread), and the same per publish; the whole run's keys are
      those of socketio-cluster.sh's redis-RATE-ROUND.json, so
      cluster_table.py reads these files too.

Commands run by a script (Herald's Lua) count in Redis's commandstats and
in total_commands_processed like any other; `client_commands` counts only
those a client sends: EVALSHA/EVAL, XREAD/XREADGROUP, CLIENT, SCRIPT and the
few plain commands the nodes issue themselves (the rest, XADD, HSET, ...,
are inside the scripts in a Herald cluster; in a Socket.IO cluster there
are no scripts and every command is a client's).
"""
import json
import signal
import socket
import sys
import time
import urllib.request

INFO_REQUEST = b"INFO stats cpu commandstats\r\n"
# Commands a client sends itself (top level); anything else in a Herald
# cluster runs inside a script. XADD is a client command for Socket.IO.
CLIENT_COMMANDS = {"evalsha", "evalsha_ro", "eval", "eval_ro", "fcall", "xread", "xreadgroup",
                   "client|unblock", "client|id", "script|load", "ping", "hello", "select", "exists",
                   "smembers", "xautoclaim", "xack", "xgroup|create"}
STEADY_SKIP_START = 1.0
STEADY_SKIP_END = 0.5


def parse_info(text):
    d = {"commands": {}}
    for line in text.splitlines():
        line = line.strip()
        if ":" not in line or line.startswith("#"):
            continue
        k, v = line.split(":", 1)
        if k.startswith("cmdstat_"):
            stats = dict(x.split("=", 1) for x in v.split(","))
            d["commands"][k[8:]] = int(stats["calls"])
            d.setdefault("usec", {})[k[8:]] = int(stats["usec"])
        elif k in ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes"):
            d[k] = int(v)
        elif k in ("used_cpu_sys", "used_cpu_user", "used_cpu_sys_main_thread", "used_cpu_user_main_thread"):
            d[k] = float(v)
    return d


def node_counters(urls):
    out = {}
    for url in urls:
        try:
            text = urllib.request.urlopen(url, timeout=0.5).read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            for name in ("herald_redis_commands_total", "herald_redis_round_trips_total",
                         "herald_redis_publishes_total", "herald_redis_entries_read_total",
                         "herald_redis_notices_read_total"):
                if line.startswith(name + "{") or line.startswith(name + " "):
                    out[name] = out.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return out


def sample(port, path, every, metrics):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    with open(path, "a") as out:
        while not stop:
            t0 = time.time()
            s.sendall(INFO_REQUEST)
            head = f.readline()
            n = int(head[1:])
            body = f.read(n + 2)
            t1 = time.time()
            d = parse_info(body.decode())
            d["t"] = (t0 + t1) / 2
            d["reply_bytes"] = len(head) + n + 2
            if metrics:
                d["nodes"] = node_counters(metrics)
            out.write(json.dumps(d) + "\n")
            out.flush()
            rest = every - (time.time() - t0)
            if rest > 0 and not stop:
                time.sleep(rest)


def delta(a, b, between, publishes, deliveries):
    """What Redis did from sample a to sample b; `between` are the samples
    a..b-1, whose INFO replies (and b's request) fall inside."""
    infos = len(between)
    commands = {k: b["commands"].get(k, 0) - a["commands"].get(k, 0) for k in b["commands"]}
    commands["info"] = commands.get("info", 0) - infos
    commands = {k: v for k, v in commands.items() if v > 0}
    total = b["total_commands_processed"] - a["total_commands_processed"] - infos
    client = sum(v for k, v in commands.items() if k in CLIENT_COMMANDS or k == "xadd" and "evalsha" not in commands)
    bytes_in = b["total_net_input_bytes"] - a["total_net_input_bytes"] - infos * len(INFO_REQUEST)
    bytes_out = b["total_net_output_bytes"] - a["total_net_output_bytes"] - sum(x["reply_bytes"] for x in between)
    cpu = lambda s: s["used_cpu_sys"] + s["used_cpu_user"]
    main = lambda s: s.get("used_cpu_sys_main_thread", 0) + s.get("used_cpu_user_main_thread", 0)
    secs = b["t"] - a["t"]
    d = {
        "secs": round(secs, 3),
        "publishes": round(publishes, 1),
        "deliveries": round(deliveries, 1),
        "commands": commands,
        "commands_total": total,
        "client_commands": client,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "cpu_secs": round(cpu(b) - cpu(a), 4),
        "cpu_secs_main_thread": round(main(b) - main(a), 4),
        "cpu_share_of_a_core": round((cpu(b) - cpu(a)) / secs, 4) if secs > 0 else None,
    }
    p = max(publishes, 1)
    d["per_publish"] = {
        "commands": round(total / p, 3),
        "client_commands": round(client / p, 3),
        "bytes_in": round(bytes_in / p, 1),
        "bytes_out": round(bytes_out / p, 1),
        "cpu_us": round(d["cpu_secs"] * 1e6 / p, 2),
    }
    d["per_delivery_cpu_us"] = round(d["cpu_secs"] * 1e6 / max(deliveries, 1), 3)
    if "usec" in a and "usec" in b:
        # Time Redis spent in each command (a script's inner commands count
        # both in their own line and in the EVALSHA that ran them).
        us = {k: b["usec"][k] - a["usec"].get(k, 0) for k in b["usec"]}
        d["commands_usec_per_call"] = {k: round(us[k] / commands[k], 2) for k in commands if k in us and commands[k] > 0}
        d["per_publish"]["usec_by_command"] = {k: round(us[k] / p, 2) for k in commands if k in us and us[k] > 0}
    if "nodes" in a and "nodes" in b:
        n = {k: b["nodes"].get(k, 0) - a["nodes"].get(k, 0) for k in b["nodes"]}
        d["nodes"] = n
        d["per_publish"]["node_commands"] = round(n.get("herald_redis_commands_total", 0) / p, 3)
        d["per_publish"]["node_round_trips"] = round(n.get("herald_redis_round_trips_total", 0) / p, 3)
    return d


def window(samples_path, stderr_path, report_path, out_path):
    samples = [json.loads(line) for line in open(samples_path) if line.strip()]
    report = json.load(open(report_path))
    step = report["rate"]["steps"][0]
    rate, duration = step["rate"], step["duration_secs"]
    connected = None
    for line in open(stderr_path):
        t, _, text = line.partition(" ")
        if text.startswith("connected "):
            connected = float(t)
    out = {}
    # The whole run, as socketio-cluster.sh's redis_delta counts it.
    whole = delta(samples[0], samples[-1], samples[:-1], report["sent"], report["delivered"])
    out.update(whole)
    out["publishes"] = report["sent"]
    out["deliveries"] = report["delivered"]
    if connected is None:
        out["steady"] = None
    else:
        start = connected + 0.05
        lo, hi = start + STEADY_SKIP_START, start + duration - STEADY_SKIP_END
        inside = [i for i, s in enumerate(samples) if lo <= s["t"] <= hi]
        if len(inside) < 2:
            out["steady"] = None
        else:
            i, j = inside[0], inside[-1]
            secs = samples[j]["t"] - samples[i]["t"]
            fanout = step["expected"] / max(step["sent"], 1)
            out["steady"] = delta(samples[i], samples[j], samples[i:j], rate * secs, rate * secs * fanout)
            out["steady"]["window"] = [round(samples[i]["t"] - start, 3), round(samples[j]["t"] - start, 3)]
        # Redis's CPU while nothing ran: before the loadgen started (heartbeats, idle reads).
        before = [s for s in samples if s["t"] <= report["started_unix_ms"] / 1000]
        if len(before) >= 2:
            a, b = before[0], before[-1]
            secs = b["t"] - a["t"]
            cpu = (b["used_cpu_sys"] + b["used_cpu_user"]) - (a["used_cpu_sys"] + a["used_cpu_user"])
            idle = cpu / secs if secs > 0 else None
            out["idle_cpu_share_of_a_core"] = round(idle, 5) if idle is not None else None
            st = out.get("steady")
            if st and idle is not None:
                # The same CPU less what Redis spent while idle (heartbeats,
                # this sampler's INFO) over as long.
                net = st["cpu_secs"] - idle * st["secs"]
                st["per_publish"]["cpu_us_less_idle"] = round(net * 1e6 / max(st["publishes"], 1), 2)
    json.dump(out, open(out_path, "w"), indent=1)


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "sample":
        args = sys.argv[4:]
        every = float(args[args.index("--every") + 1]) if "--every" in args else 0.25
        metrics = args[args.index("--metrics") + 1].split(",") if "--metrics" in args else []
        sample(int(sys.argv[2]), sys.argv[3], every, metrics)
    elif len(sys.argv) == 6 and sys.argv[1] == "window":
        window(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
