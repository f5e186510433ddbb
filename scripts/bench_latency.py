#!/usr/bin/python3
"""Latency under load (scripts/bench_e2e.py --latency, scripts/bench.sh
--latency; see bench/README.md, "Latency under load").

Each gateway (espgw, ipsec-secgw, and testpmd's io forwarding as the floor
of the harness itself) gets its two ports as memif servers; bench/e2e/
latency_gen, a separate DPDK process on CPU 0, is the client: it offers
64-byte inner packets at a paced rate, stamps each with the TSC when it is
sent and records how long it took to come back out of the other port.

  1. each gateway's maximum rate here: the generator unpaced (bursts of 32),
     the best of the reps;
  2. espgw's maximum, per direction, sets the offered loads: 10%, 50% and
     90% of it, offered to every gateway, so that the three are compared at
     the same packets per second (a gateway whose maximum is lower than an
     offered load is overloaded there: its queues fill and it drops).

Every measurement point starts the gateway afresh: outbound, the generator
finds a packet's stamp from the ESP sequence number (a fresh SA counts from
1), and DPDK 22.11's memif server can crash when a client leaves while it
polls. Figures are p50 / p90 / p99 / p99.9 / max of the one-way time from a
3-second window after a 1-second warm-up; each point is run --reps times
(a fresh gateway each time) and the median of each figure is reported. A
point whose delivered rate is under 99% of the offered one is marked
overloaded.

What the figures include: memif's copies (one into the gateway, one out),
the generator's own loop, and the worker's share of CPU 1 with nothing else
(the generator shares CPU 0 with the gateway's main thread). testpmd's row
is that floor."""

import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_e2e as be

LOADS = (0.1, 0.5, 0.9)
FRAMES = 4096          # = latency_gen's stamp slots: frame i carries IPv4 id i
INNER_LEN = 64
MTU = 1500             # memif's largest frame is 1518 B (ipsec-secgw refuses more)


def make_pcaps(work):
    """bench_e2e's pcaps with FRAMES packets, inner IPv4 id = frame index:
    "clear", LAN -> remote prefix; "esp", the peer's ESP (SPI_IN, sequence
    1..FRAMES) of the reverse packets (espgw's inbound SA has replay window
    0, ipsec-secgw's default is off: the frames loop)."""
    files = be.make_pcaps(work, [INNER_LEN], count=FRAMES)
    return {"clear": files[("out", "aes128", "esp", INNER_LEN)], "esp": files[("in", "aes128", "esp", INNER_LEN)]}


def memif_devs(sock):
    return (f"net_memif0,role=server,id=0,socket-abstract=no,socket={sock}",
            f"net_memif1,role=server,id=1,socket-abstract=no,socket={sock}")


def gateway_cmd(a, impl, direction, sock, prefix, work):
    """The gateway's command line: port 0 (memif id 0) takes the generator's
    packets, port 1 (id 1) gives them back."""
    src, sink = memif_devs(sock)
    if impl == "espgw":
        import yaml
        cfg = work / f"espgw-{direction}.yaml"
        be.espgw_config(cfg, direction, src, sink, prefix, work / f"ctl-{prefix}.sock", a.hugepages)
        c = yaml.safe_load(cfg.read_text())
        for p in c["ports"]:
            p["mtu"] = MTU
        cfg.write_text(yaml.safe_dump(c, sort_keys=False))
        return [a.espgw, "--config", str(cfg)]
    if impl == "secgw":
        cfg = work / "secgw.cfg"
        be.secgw_config(cfg)
        cmd = be.secgw_cmd(a.secgw, direction, src, sink, prefix, cfg, a.hugepages, a.secgw_mode)
        cmd[cmd.index("--mtu") + 1] = str(MTU)
        return cmd
    return be.testpmd_cmd(a.testpmd, src, sink, prefix, a.hugepages)


def tag_and_frames(impl, direction, pcaps):
    if impl == "testpmd":
        return "ip-id", pcaps["clear"]           # forwarded unchanged
    if direction == "out":
        return "esp-seq", pcaps["clear"]         # out: ESP, sequence numbers from 1
    return "ip-id", pcaps["esp"]                 # in: the clear inner packet


def point(a, gen, impl, direction, rate, pcaps, work, n, warmup, duration):
    """One measurement: a fresh gateway, the generator at `rate` (0:
    unpaced). Returns the generator's JSON, plus the gateway's log tail on
    failure."""
    sock = work / f"m{n}.sock"
    prefix = f"lat{n}"
    sock.unlink(missing_ok=True)
    tag, frames = tag_and_frames(impl, direction, pcaps)
    log = work / f"{impl}-{direction}-{n}.log"
    with open(log, "w") as lf:
        gw = subprocess.Popen(gateway_cmd(a, impl, direction, sock, prefix, work), stdout=lf,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        gen_p = None
        try:
            deadline = time.time() + 30
            while not sock.exists():
                if gw.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{impl} did not open its memif socket: see {log}\n" + log.read_text()[-2000:])
                time.sleep(0.05)
            time.sleep(1.0)  # ports started after the probe made the socket
            cmd = [gen, "--socket", str(sock), "--pcap", str(frames), "--tag", tag, "--rate", str(int(rate)),
                   "--burst", "32", "--queues", "2" if impl == "secgw" else "1", "--warmup", str(warmup), "--duration", str(duration), "--hold"]
            gen_p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
            line = gen_p.stdout.readline()
            if not line:
                raise RuntimeError(f"latency_gen failed against {impl}: {gen_p.stderr.read()[-2000:]}")
            res = json.loads(line)
        finally:
            be.stop(gw, signal.SIGINT)
            if gen_p:
                try:
                    gen_p.stdin.close()
                    gen_p.wait(timeout=10)
                except (subprocess.TimeoutExpired, BrokenPipeError):
                    gen_p.kill()
            shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
            sock.unlink(missing_ok=True)
    if res["unmatched"]:
        raise RuntimeError(f"{impl} {direction}: {res['unmatched']} packets came back that match no stamp "
                           f"(the tagging assumption broke): {res}")
    return res


def run(a):
    t_start = time.time()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    gen = a.latency_gen or str(Path(a.build) / "bench" / "e2e" / "latency_gen")
    if not Path(gen).exists():
        raise SystemExit(f"no {gen}: build it (meson -Dbench=true; ninja bench/e2e/latency_gen)")
    impls = [i for i in a.impls.split(",") if i in ("espgw", "secgw", "testpmd")]
    if "espgw" not in impls:
        raise SystemExit("--latency needs espgw among --impls: its maximum sets the offered loads")
    dirs = a.dirs.split(",")
    warmup = a.warmup if a.warmup is not None else 1.0
    duration = a.interval or 3.0
    reps = max(1, a.reps)
    be.log(f"latency plan: {len(dirs)} direction(s) x {len(impls)} gateway(s) x {1 + len(LOADS)} points x {reps} "
           f"rep(s) of {warmup:g}+{duration:g} s; estimated "
           f"{len(dirs) * len(impls) * (1 + len(LOADS)) * reps * (warmup + duration + 2.5) / 60:.1f} min")
    pcaps = make_pcaps(work)
    n = 0
    maxima, points = {}, []

    def measured(d, rate, load):
        """a.reps runs of one point for every gateway, the gateways taking
        turns within each rep (this VM's memif path has a slow mode that
        comes and goes over minutes: taking turns spreads it evenly); per
        gateway the median of each figure (delivered rate, percentiles) and
        every run's figures under "reps"."""
        nonlocal n
        runs = {impl: [] for impl in impls}
        for _ in range(reps):
            for impl in impls:
                n += 1
                runs[impl].append(point(a, gen, impl, d, rate, pcaps, work, n, warmup, duration))
        out = {}
        for impl, rs in runs.items():
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]
                   if isinstance(rs[0][k], (int, float)) and all(r[k] is not None for r in rs)}
            med["offered_pps"] = rate
            # below 99% of the offered rate the gateway did not keep up: its
            # queues filled and the generator's packets were refused or lost
            med["overloaded"] = rate > 0 and med["delivered_pps"] < 0.99 * rate
            out[impl] = {"direction": d, "impl": impl, "load": load, **med, "reps": rs}
        return out

    for d in dirs:
        maxima[d] = {}
        for impl, r in measured(d, 0, None).items():
            # the best of the reps (the slow mode above)
            maxima[d][impl] = max(x["delivered_pps"] for x in r["reps"])
            points.append(r)
            reps_mpps = ", ".join(f"{x['delivered_pps'] / 1e6:.2f}" for x in r["reps"])
            be.log(f"  {d:3} {impl:8} max {maxima[d][impl] / 1e6:6.2f} Mpps (the best of {reps_mpps})")
        for load in LOADS:
            rate = load * maxima[d]["espgw"]
            for impl, r in measured(d, rate, load).items():
                points.append(r)
                be.log(f"  {d:3} {impl:8} {load:4.0%} {rate / 1e6:5.2f} Mpps: delivered {r['delivered_pps'] / 1e6:5.2f}, "
                       f"p50 {r['p50_ns'] / 1e3:6.1f}  p99 {r['p99_ns'] / 1e3:7.1f}  p99.9 {r['p999_ns'] / 1e3:7.1f} us"
                       f"{'  OVERLOADED' if r['overloaded'] else ''}")

    result = {
        "meta": {"what": "one-way latency through the gateway at offered loads (scripts/bench_latency.py)",
                 "inner_ip_len": INNER_LEN, "algo": "aes128-gcm", "encap": "esp", "ports": "memif (copy mode)",
                 "memory": "2MB hugepages" if a.hugepages else "--no-huge -m 1024", "warmup_s": warmup,
                 "window_s": duration, "reps": reps, "loads_of_espgw_max": LOADS, "cpus": "gateway worker on CPU 1; generator "
                 "and gateway main thread on CPU 0", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "elapsed_s": round(time.time() - t_start, 1)},
        "max_pps": maxima,
        "points": points,
    }
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    be.log(f"wrote {a.out}")
    if a.chart:
        chart(result, a.chart)
        be.log(f"wrote {a.chart}")
    print_table(result)
    return 0


def print_table(result):
    print("| direction | gateway | offered, Mpps | delivered | p50 | p99 | p99.9 | max (us) |")
    print("|---|---|---|---|---|---|---|---|")
    for p in result["points"]:
        if p["load"] is None:
            continue
        print(f"| {p['direction']} | {p['impl']} | {p['offered_pps'] / 1e6:.2f} ({p['load']:.0%}) | "
              f"{p['delivered_pps'] / 1e6:.2f}{' (overloaded)' if p['overloaded'] else ''} | {p['p50_ns'] / 1e3:.1f} | {p['p99_ns'] / 1e3:.1f} | "
              f"{p['p999_ns'] / 1e3:.1f} | {p['max_ns'] / 1e3:.0f} |")


def chart(result, out_png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dirs = list(result["max_pps"])
    colors = {"espgw": "tab:blue", "secgw": "tab:orange", "testpmd": "tab:gray"}
    names = {"espgw": "espgw", "secgw": "ipsec-secgw", "testpmd": "testpmd io (harness floor)"}
    fig, axes = plt.subplots(1, len(dirs), figsize=(6.2 * len(dirs), 4.6), squeeze=False)
    for ax, d in zip(axes[0], dirs):
        for impl in result["max_pps"][d]:
            pts = sorted((p for p in result["points"] if p["direction"] == d and p["impl"] == impl
                          and p["load"] is not None), key=lambda p: p["offered_pps"])
            x = [p["offered_pps"] / 1e6 for p in pts]
            for key, style, label in (("p50_ns", "-", "p50"), ("p99_ns", "--", "p99"), ("p999_ns", ":", "p99.9")):
                ax.plot(x, [p[key] / 1e3 for p in pts], style, marker="o", ms=3.5, color=colors[impl],
                        label=f"{names[impl]} {label}")
                over = [p for p in pts if p["overloaded"]]
                ax.plot([p["offered_pps"] / 1e6 for p in over], [p[key] / 1e3 for p in over], "x", ms=9,
                        color=colors[impl])
        ax.set_yscale("log")
        ax.set_xlabel("offered load, Mpps (10/50/90% of espgw's maximum here); x: overloaded")
        ax.set_ylabel("one-way latency, us")
        mx = ", ".join(f"{names[i].split()[0]} {v / 1e6:.2f}" for i, v in result["max_pps"][d].items())
        ax.set_title(f"{d}bound, 64 B, AES-128-GCM; max Mpps: {mx}", fontsize=9.5)
        ax.grid(alpha=0.3, which="both")
    h, l = axes[0][0].get_legend_handles_labels()
    fig.legend(h, l, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(out_png, dpi=110)


if __name__ == "__main__":
    sys.exit("run through scripts/bench_e2e.py --latency")
