#!/usr/bin/env python3
"""Summaries of bench/results/*.jsonl (one JSON object per series: section, subject, metric, unit,
samples): median, min, max, n, and the ratio of each median to vpnsup's for the same metric.

  report.py summary RESULTS SECTION     print one section as a plain table
  report.py docs RESULTS DOC CHART_DIR [MACHINE_MD]
      rewrite DOC between the GENERATED markers (machine description included) and draw the charts
"""
import json
import statistics
import sys

TITLES = {
    "arm": "1. Kill-switch arm time (process start -> ruleset committed, kernel notification)",
    "react": "2. Reaction time (event -> vpnsup's new ruleset committed, kernel notification)",
    "forwards-apply": "3a. Port-forward apply time",
    "forwards-rate": "3b. New TCP connections per second through a forward (2 vs 10,000 forwards)",
    "forwards-throughput": "3c. Forwarded throughput, iperf3 to a LAN host (2 vs 10,000 forwards)",
    "tunnel": "4. Tunnel throughput, iperf3 LAN client -> internet host",
    "footprint": "5. Footprint",
    "storm": "6. Event storm",
    "wireguard": "7. WireGuard (userspace) through the router: throughput, reactions, idle wake-ups",
}
BEGIN, END = "<!-- BEGIN GENERATED: bench -->", "<!-- END GENERATED: bench -->"


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fmt(value):
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def rows(series, section):
    """(metric, subject, unit, median, min, max, n, ratio) in recorded order."""
    chosen = [s for s in series if s["section"] == section]
    reference = {}
    for s in chosen:
        if s["subject"].startswith("vpnsup") and s["metric"] not in reference and s["samples"]:
            reference[s["metric"]] = statistics.median(s["samples"])
    out = []
    for s in chosen:
        samples = s["samples"]
        if not samples:
            continue
        median = statistics.median(samples)
        ref = reference.get(s["metric"])
        ratio = median / ref if ref and not s["subject"].startswith("vpnsup") else None
        out.append((s["metric"], s["subject"], s["unit"], median, min(samples), max(samples), len(samples), ratio))
    return out


def summary(path, section):
    table = rows(load(path), section)
    print(TITLES.get(section, section))
    print(f"{'metric':<46}{'subject':<44}{'median':>12}{'min':>12}{'max':>12}{'n':>4}{'x vpnsup':>10}")
    for metric, subject, unit, median, low, high, n, ratio in table:
        print(f"{metric:<46}{subject:<44}{fmt(median) + ' ' + unit:>12}{fmt(low):>12}{fmt(high):>12}{n:>4}"
              f"{(fmt(ratio) + 'x') if ratio else '':>10}")


def markdown(series, section):
    lines = [f"### {TITLES.get(section, section)}", "",
             "| metric | subject | median | min | max | n | ratio to vpnsup |", "|---|---|---|---|---|---|---|"]
    for metric, subject, unit, median, low, high, n, ratio in rows(series, section):
        lines.append(f"| {metric} | {subject} | {fmt(median)} {unit} | {fmt(low)} | {fmt(high)} | {n} | "
                     f"{(fmt(ratio) + ' x') if ratio else ''} |")
    return "\n".join(lines) + "\n"


def charts(series, directory):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []

    arm = [r for r in rows(series, "arm") if r[0] in ("lockdown", "full ruleset", "first drop policy",
                                                      "start and exit, no commit")]
    if arm:
        fig, ax = plt.subplots(figsize=(8, 3.6))
        labels = [f"{subject}\n{metric}" for metric, subject, *_ in arm]
        medians = [r[3] for r in arm]
        errors = [[r[3] - r[4] for r in arm], [r[5] - r[3] for r in arm]]
        colors = ["#2b7bba" if r[1].startswith("vpnsup") else "#999999" if r[1].startswith("floor") else "#c0504d"
                  for r in arm]
        ax.barh(range(len(arm)), medians, xerr=errors, color=colors, capsize=3)
        ax.set_yticks(range(len(arm)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms from process start to the commit (median, min-max)")
        ax.set_title("Kill-switch arm time (blue: vpnsup, red: baselines, grey: process start floors)")
        fig.tight_layout()
        fig.savefig(f"{directory}/bench-arm.png", dpi=110)
        made.append("bench-arm.png")
        plt.close(fig)

    apply = [s for s in series if s["section"] == "forwards-apply" and s["samples"]]
    if apply:
        fig, ax = plt.subplots(figsize=(7, 4))
        subjects = []
        for s in apply:
            if s["subject"] not in subjects:
                subjects.append(s["subject"])
        for subject in subjects:
            points = sorted((int(s["metric"].split()[0].replace(",", "")), statistics.median(s["samples"]),
                             min(s["samples"]), max(s["samples"])) for s in apply if s["subject"] == subject)
            xs = [p[0] for p in points]
            ax.errorbar(xs, [p[1] for p in points], yerr=[[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]],
                        marker="o", capsize=3, label=subject)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("port forwards")
        ax.set_ylabel("apply time, ms (median, min-max)")
        ax.set_title("Port-forward apply time")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(f"{directory}/bench-forwards.png", dpi=110)
        made.append("bench-forwards.png")
        plt.close(fig)
    return made


def docs(path, doc, directory, machine=None):
    series = load(path)
    sections = []
    for s in series:
        if s["section"] not in sections:
            sections.append(s["section"])
    order = [s for s in TITLES if s in sections] + [s for s in sections if s not in TITLES]
    made = charts(series, directory)
    body = [BEGIN, "", "Generated by `make bench` (bench/report.py) from bench/results/latest.jsonl. The ratio column is",
            "this subject's median divided by vpnsup's for the same metric (above 1: more time, or more",
            "throughput, than vpnsup).", ""]
    if machine:
        body += ["Machine of this run:", "", open(machine).read().rstrip("\n"), ""]
    for picture in made:
        body.append(f"![{picture}]({picture})")
        body.append("")
    body += [markdown(series, section) for section in order]
    body.append(END)
    text = open(doc).read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + "\n".join(body) + tail
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(body) + "\n"
    open(doc, "w").write(text)


if __name__ == "__main__":
    verb = sys.argv[1]
    if verb == "summary":
        summary(sys.argv[2], sys.argv[3])
    elif verb == "docs":
        docs(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        sys.exit(__doc__)
