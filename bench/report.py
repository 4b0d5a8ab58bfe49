"""bench/run.py's results as a Markdown table and as a PNG chart of the ratios."""

MET, NOT_MET = "met", "NOT met"


def _number(value: float, unit: str) -> str:
    if unit in ("req/s", "images/s") and value >= 1000:
        return f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:.1f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _figure(stats: dict, unit: str) -> str:
    text = f"{_number(stats['median'], unit)} {unit}"
    if len(stats["runs"]) > 1:
        text += f" ({_number(stats['min'], unit)}–{_number(stats['max'], unit)})"
    return text


def _p99(stats: dict | None) -> str:
    if not stats:
        return ""
    return f", p99 {_number(stats['median'], 'ms')} ms"


def _cells(entry: dict) -> list[str]:
    unit = entry["unit"]
    figure = _figure(entry["figure"], unit) + _p99(entry.get("p99_ms"))
    if entry.get("failed"):
        figure += "; FAILED: " + ", ".join(f"{n} x {code}" for code, n in entry["failed"].items())
    if "over_idle" in entry:
        figure += f"; max {entry['figure']['max']:.1f} = idle + {entry['over_idle']:.1f}"
    baseline = ""
    if "baseline" in entry:
        base = entry["baseline"]
        baseline = f"{base['what']}: {_figure(base, unit)}" + _p99(entry.get("baseline_p99_ms"))
    ratio = ""
    if "ratio" in entry:
        low, high = entry["ratio_range"]
        ratio = f"**{entry['ratio']:.2f}x** ({low:.2f}–{high:.2f})"
    bar = entry.get("bar", {}).get("text", "")
    met = {True: f"✅ {MET}", False: f"❌ {NOT_MET}", None: ""}[entry.get("met")]
    return [entry["what"], figure, baseline, ratio, bar, met]


def _load(load: dict | None) -> str:
    if not load:
        return ""
    text = f" Load average (1 min) {load['start'][0]:.2f} at the start"
    if "end" in load:
        text += f", {load['end'][0]:.2f} at the end"
    return text + "."


def markdown(results: dict) -> str:
    machine = results["machine"]
    plan = results["plan"]
    lines = [
        f"Run {results['date']}"
        + (f" ({results['label']})" if results.get("label") else "")
        + (f" at commit {results['commit']}" if results.get("commit") else "")
        + f": `{results['command']}`, {results.get('seconds', 0):.0f} s.",
        "",
        f"Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['memory']} RAM, "
        f"disk {machine['disk']}, {machine['filesystem']}; kernel {machine['kernel']}; "
        f"Python {machine['python']}, {machine['nginx']}, {machine['wrk']}, {machine['curl']}."
        + _load(results.get("load_average")),
        "",
        "Each figure is the median of its runs (min–max in brackets); ratios are medians "
        "over medians (in brackets: the lowest and highest ratio of a service run to the "
        "baseline run next to it). "
        "Runs: uploads "
        + ", ".join(f"{n} x {mib} MiB" for mib, n in plan["uploads"].items())
        + f" (each kind), downloads {plan['downloads']}, "
        f"concurrent rounds {plan['rounds']} x {32 * 4} images, "
        f"wrk {plan['wrk_runs']} x {plan['wrk_seconds']:g} s (-t2 -c32).",
    ]
    if results.get("settings"):
        settings = ", ".join(f"{k}={v}" for k, v in sorted(results["settings"].items()))
        lines += ["", f"Service settings given: {settings}."]
    for target, result in results["targets"].items():
        lines += ["", f"**{target}** (`{' '.join(result['command'])}`)", ""]
        if result.get("stale"):
            lines += [f"(built before changes to {', '.join(result['stale'])})", ""]
        lines.append("| measure | imagestore | baseline | ratio | bar | |")
        lines.append("|---|---|---|---|---|---|")
        for entry in result["rows"]:
            lines.append("| " + " | ".join(_cells(entry)) + " |")
        met = [e["met"] for e in result["rows"] if e.get("met") is not None]
        lines += ["", f"Bars met: {sum(met)} of {len(met)}."]
        if result.get("exit_code"):
            lines.append(f"The service exited with {result['exit_code']} on SIGTERM.")
        for error in result.get("errors", []):
            lines.append(f"FAILED, not measured: {error}")
        if result.get("log_problems"):
            lines.append("Errors in the service's log: " + "; ".join(result["log_problems"][:3]))
    return "\n".join(lines) + "\n"


def chart(results: dict, path: str) -> None:
    """Three panels: the ratios to the baselines (with each bar's threshold), the
    concurrent uploads against 150 images/s, and RSS against idle + 16 MiB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(results["targets"])
    colours = {True: "#2e7d32", False: "#c62828", None: "#78909c"}
    ratio_keys = [
        entry["key"] for entry in results["targets"][targets[0]]["rows"] if "ratio" in entry
    ]
    labels = {
        entry["key"]: entry["what"] + f"\nvs {entry['baseline']['what']}"
        for entry in results["targets"][targets[0]]["rows"]
        if "ratio" in entry
    }
    fig, axes = plt.subplots(
        1,
        3,
        figsize=(17, 0.55 * len(ratio_keys) * len(targets) + 2.5),
        gridspec_kw={"width_ratios": [3, 1, 1.3]},
    )
    ax = axes[0]
    height = 0.8 / len(targets)
    hatches = ["", "//", "..", "xx"]
    for t, target in enumerate(targets):
        rows = {entry["key"]: entry for entry in results["targets"][target]["rows"]}
        for k, key in enumerate(ratio_keys):
            entry = rows.get(key)
            if not entry:
                continue
            y = k + (t - (len(targets) - 1) / 2) * height
            low, high = entry["ratio_range"]
            ax.barh(
                y,
                entry["ratio"],
                height=height * 0.9,
                color=colours[entry.get("met")],
                hatch=hatches[t % len(hatches)],
                edgecolor="white",
                xerr=[[entry["ratio"] - low], [high - entry["ratio"]]],
                error_kw={"ecolor": "#333", "capsize": 2, "lw": 1},
            )
            ax.text(
                max(high, entry["ratio"]) + 0.02,
                y,
                f"{entry['ratio']:.2f}x {target}",
                va="center",
                fontsize=8,
            )
            threshold = entry.get("bar", {}).get("ratio_at_least")
            if threshold is not None and t == 0:
                ax.plot([threshold, threshold], [k - 0.45, k + 0.45], color="black", lw=2)
    ax.axvline(1.0, color="#999", ls="--", lw=1)
    ax.set_yticks(range(len(ratio_keys)), [labels[k] for k in ratio_keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("imagestore / baseline (median); black tick: the bar; whiskers: paired runs")
    ax.set_title("Ratios to dd and nginx (higher is better)")

    ax = axes[1]
    names, values, spans, met, failed = [], [], [], [], []
    for target in targets:
        for entry in results["targets"][target]["rows"]:
            if entry["key"].startswith("concurrent_"):
                names.append(f"{target}\n{entry['what'].split(', ')[-1].split()[-1]}")
                values.append(entry["figure"]["median"])
                spans.append(
                    [
                        entry["figure"]["median"] - entry["figure"]["min"],
                        entry["figure"]["max"] - entry["figure"]["median"],
                    ]
                )
                met.append(entry.get("met"))
                failed.append(sum(entry.get("failed", {}).values()))
    ax.bar(
        range(len(values)),
        values,
        color=[colours[m] for m in met],
        yerr=list(zip(*spans, strict=True)) if spans else None,
        capsize=3,
    )
    for x, (value, count) in enumerate(zip(values, failed, strict=True)):
        if count:
            ax.text(x, value / 2, f"{count}\nfailed", ha="center", fontsize=8, color="white")
    ax.axhline(150, color="black", lw=2)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("images/s")
    ax.set_title("32 concurrent 1 MiB uploads\n(bar: 150 images/s)")

    ax = axes[2]
    kinds = [
        ("rss_idle", "idle"),
        ("rss_peak_upload_512MiB", "peak\nupload"),
        ("rss_peak_download_512MiB", "peak\ndownload"),
        ("rss_after", "after\ntick"),
    ]
    width = 0.8 / len(targets)
    for t, target in enumerate(targets):
        rows = {entry["key"]: entry for entry in results["targets"][target]["rows"]}
        idle = rows["rss_idle"]["figure"]["median"]
        xs = [k + (t - (len(targets) - 1) / 2) * width for k in range(len(kinds))]
        values = [rows[key]["figure"]["max"] for key, _ in kinds]
        ax.bar(
            xs,
            values,
            width=width * 0.9,
            color=[colours[rows[key].get("met")] for key, _ in kinds],
            hatch=hatches[t % len(hatches)],
            edgecolor="white",
            label=target,
        )
        ax.plot(
            [xs[0] - width / 2, xs[-1] + width / 2],
            [idle + 16, idle + 16],
            color="black",
            lw=1.5,
            ls="-" if t == 0 else ":",
        )
    ax.set_xticks(range(len(kinds)), [label for _, label in kinds], fontsize=8)
    ax.set_ylabel("MiB (VmRSS of the process tree; max of runs)")
    ax.set_title("Server RSS\n(line: idle + 16 MiB)")
    if len(targets) > 1:
        ax.legend(fontsize=8, loc="lower right", title="hatched: 2nd target", title_fontsize=7)

    machine = results["machine"]
    fig.suptitle(
        f"imagestore bench {results['date']}"
        + (f" ({results['label']})" if results.get("label") else "")
        + f" — {machine['nproc']} cores {machine['cpu']}, {machine['disk']} "
        f"({machine['filesystem']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
