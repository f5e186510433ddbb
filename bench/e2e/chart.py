#!/usr/bin/python3
"""Chart of a bench_e2e.py JSON result: Mpps per inner size, espgw vs
ipsec-secgw vs the I/O+crypto limit, one panel per (direction, algorithm,
encapsulation). Rates are per second of worker CPU time (what one dedicated
core would do), the figure the harness compares on a shared machine.

    /usr/bin/python3 bench/e2e/chart.py RESULT.json OUT.png
"""
import json
import sys
import textwrap


def panels_chart(rows, out_png, draw, ymax, headroom, ylabel, legend_ncol, legend_fontsize, title):
    """One panel per (direction, algorithm, encapsulation) of rows, drawn by
    draw(ax, panel_rows); the axes, legend, title and layout the charts share."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["direction"], r["algo"], r["encap"]) for r in rows))
    ncol = min(4, len(panels)) or 1
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol + 0.6, 3.9 * nrow + 1.1), squeeze=False)
    for i, (d, algo, encap) in enumerate(panels):
        ax = axes[i // ncol][i % ncol]
        pr = [r for r in rows if (r["direction"], r["algo"], r["encap"]) == (d, algo, encap)]
        draw(ax, pr)
        ax.set_xticks(range(len(pr)))
        ax.set_xticklabels([str(r["inner_ip_len"]) + (" B" if r["inner_ip_len"] != "imix" else "") for r in pr])
        ax.set_title(f"{d}, {algo.upper().replace('AES', 'AES-')}-GCM, {'ESP-in-UDP' if encap != 'esp' else 'ESP'}",
                     fontsize=10.5)
        ax.set_ylim(0, ymax * headroom if ymax else 1)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        if i % ncol == 0:
            ax.set_ylabel(ylabel)
        ax.set_xlabel("inner IP total length")
    for i in range(len(panels), nrow * ncol):
        axes[i // ncol][i % ncol].axis("off")
    # The title wrapped to the figure's width (~12 characters per inch at
    # this size; a title wider than the figure was cut at both edges), each
    # extra line pushing the legend and the panels down.
    lines = textwrap.wrap(title, width=int(fig.get_figwidth() * 12)) or [""]
    extra = 0.18 * (len(lines) - 1)
    h, l = axes[0][0].get_legend_handles_labels()
    fig.legend(h, l, loc="upper center", bbox_to_anchor=(0.5, 1 - (0.38 + extra) / fig.get_figheight()),
               ncol=legend_ncol, fontsize=legend_fontsize, frameon=False)
    fig.suptitle("\n".join(lines), y=1 - 0.08 / fig.get_figheight(), va="top", fontsize=10.5)
    # room for the title and the legend, in inches
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.75 + extra) / fig.get_figheight()))
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def plot(result, out_png):
    rows = result["rows"]
    series = [("espgw", "espgw", "#1f77b4"), ("secgw", "ipsec-secgw", "#ff7f0e"),
              ("limit_mpps", "limit: I/O + crypto", "#9e9e9e")]
    ymax = 0
    for r in rows:
        for key, _, _ in series:
            v = r.get(key)
            v = v.get("mpps_per_worker_cpu_s_median") if isinstance(v, dict) else v
            if isinstance(v, (int, float)):
                ymax = max(ymax, v)

    def draw(ax, pr):
        w = 0.27
        for j, (key, name, color) in enumerate(series):
            xs, ys, na = [], [], []
            for x, r in enumerate(pr):
                v = r.get(key)
                if isinstance(v, dict) and "n/a" in v:
                    na.append(x + (j - 1) * w)
                    continue
                v = v.get("mpps_per_worker_cpu_s_median") if isinstance(v, dict) else v
                if isinstance(v, (int, float)):
                    xs.append(x + (j - 1) * w)
                    ys.append(v)
            bars = ax.bar(xs, ys, w, label=name, color=color,
                          hatch="//" if key == "limit_mpps" else None, edgecolor="white" if key != "limit_mpps" else "#616161")
            for b, y in zip(bars, ys):
                ax.text(b.get_x() + b.get_width() / 2, y + ymax * 0.01, f"{y:.1f}", ha="center", va="bottom",
                        fontsize=7.5)
            for x in na:
                ax.text(x, ymax * 0.02, "n/a", ha="center", va="bottom", fontsize=8, rotation=90, color=color)

    panels_chart(rows, out_png, draw, ymax, 1.14, "Mpps per worker CPU-second", 3, 9.5,
                 f"espgw vs ipsec-secgw ({result.get('secgw_mode', 'legacy')}), 1 worker, "
                 f"{result.get('memory')}, median of {result.get('reps')} x {result.get('interval_s'):g} s, "
                 f"TSC {result.get('tsc_hz', 0) / 1e6:.0f} MHz; bars: Mpps per second of worker CPU time")
    if any(r.get("crypto_floor_cycles") for r in rows):
        plot_costs(result, costs_png(out_png))


def costs_png(out_png):
    s = str(out_png)
    return (s[:-4] if s.endswith(".png") else s) + "-costs.png"


def plot_costs(result, out_png):
    """Where espgw's cycles go, per packet: I/O (testpmd io-forward on the same
    pcap and sink), the crypto floor (IPsec-MB's one-shot call on L1-resident
    buffers) and espgw's own cost (the rest), stacked; ipsec-secgw's total
    beside it."""
    rows = [r for r in result["rows"] if isinstance(r.get("espgw"), dict)]
    ymax = 0
    for r in rows:
        sg = r.get("secgw")
        ymax = max(ymax, r["espgw"].get("cycles_per_packet") or 0,
                   (sg.get("cycles_per_packet") or 0) if isinstance(sg, dict) else 0)

    def draw(ax, pr):
        w = 0.38
        for x, r in enumerate(pr):
            io, fl = r.get("io_only_cycles"), r.get("crypto_floor_cycles")
            total = r["espgw"].get("cycles_per_packet")
            if io and fl and total:
                own = total - io - fl
                parts = [(io, "I/O (testpmd io-fwd)", "#9e9e9e"), (fl, "crypto floor (IPsec-MB one-shot)", "#2ca02c"),
                         (max(own, 0), "espgw own", "#1f77b4")]
                bottom = 0
                for v, name, color in parts:
                    ax.bar(x - w / 2, v, w, bottom=bottom, color=color, label=name if x == 0 else None,
                           edgecolor="white")
                    bottom += v
                ax.text(x - w / 2, total + ymax * 0.01, f"{total:.0f}\n(own {own:.0f})", ha="center", va="bottom",
                        fontsize=7.5)
            sg = r.get("secgw")
            sc = sg.get("cycles_per_packet") if isinstance(sg, dict) else None
            if sc:
                ax.bar(x + w / 2, sc, w, color="#ff7f0e", label="ipsec-secgw total" if x == 0 else None,
                       edgecolor="white")
                ax.text(x + w / 2, sc + ymax * 0.01, f"{sc:.0f}", ha="center", va="bottom", fontsize=7.5)

    panels_chart(rows, out_png, draw, ymax, 1.2, "cycles per packet (worker CPU)", 4, 9,
                 "espgw's cycles per packet: I/O + crypto floor + own, beside ipsec-secgw's total "
                 f"(median of {result.get('reps')} reps)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    plot(json.load(open(sys.argv[1])), sys.argv[2])
