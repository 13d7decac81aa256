"""The benchmark's report: each target evaluated, the markdown tables, the chart.

``evaluate_targets`` states each of the storage-engine issue's targets as passed or failed from
the figures ``benchmarks.run`` measured; ``render_markdown`` writes the whole report, and
``make_chart`` the chart when matplotlib is installed.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.baselines import ADAPTERS
from benchmarks.config import (
    BASELINE_ORDER,
    GROUP_SEP,
    KB,
    MB,
    SNAPSTORE_ORDER,
    Config,
    commit_schedule,
    schedule_units,
)

if TYPE_CHECKING:
    from benchmarks.run import Reference


def fmt_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    if n >= MB:
        return f"{n / MB:.2f} MiB"
    if n >= KB:
        return f"{n / KB:.1f} KiB"
    return f"{n:.0f} B"


def fmt_ms(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_ratio(x: float | None) -> str:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "-"
    if x >= 100:
        return f"{x:.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x"


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0 or math.isnan(num) or math.isnan(den):
        return None
    return num / den


def per_round_ratios(r: dict[str, Any], base: dict[str, Any], key: str) -> str:
    """The ratio of ``key`` to the baseline's in each round both ran, e.g. "0.31x, 0.35x, 0.30x"."""
    base_by_round = {b["round"]: b[key] for b in base.get("commit_rounds", [])}
    xs = [ratio(x[key], base_by_round.get(x["round"])) for x in r.get("commit_rounds", [])]
    return ", ".join(fmt_ratio(x) for x in xs if x is not None)


def evaluate_targets(cfg: Config, ref: Reference, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ok = {n: r for n, r in results.items() if "error" not in r}
    snaps = [n for n in SNAPSTORE_ORDER if n in ok]
    costs = ref.costs
    targets: list[dict[str, Any]] = []

    def add(text: str, name: str | None, passed: bool | None, measured: str, note: str = "",
            informational: bool = False) -> None:
        status = "INFO" if informational else \
            "SKIP" if passed is None else ("PASS" if passed else "FAIL")
        targets.append({"target": text, "approach": name, "status": status,
                        "measured": measured, "note": note})

    if not snaps:
        errors = [f"{n}: {results[n]['error']}" for n in SNAPSTORE_ORDER if n in results]
        why = ("snapstore adapters failed: " + "; ".join(errors)) if errors else \
            "no snapstore adapter ran (not selected or not importable)"
        add("all snapstore targets", None, None, "-", why)
        return targets

    for n in snaps:
        r = ok[n]
        # 1. commit speed, against writing the same state as one zstd-3 file, in the same run
        fz = ok.get("full-zstd")
        limit = {"snapstore-dir": 0.5, "snapstore-mem": 0.35, "snapstore-pg": 1.0}.get(n, 0.5)
        # (each figure the median over the commit rounds; the per-round ratios show the spread)
        x = ratio(r["commit_median_ms"], fz["commit_median_ms"]) if fz else None
        add(f"commit median <= {limit}x writing one full zstd-3 file", n,
            None if x is None else x <= limit, f"{fmt_ratio(x)} of a zstd-3 file",
            f"{fmt_ms(r['commit_median_ms'])} ms vs {fmt_ms(fz['commit_median_ms'])} ms; "
            f"per round {per_round_ratios(r, fz, 'median_ms')}" if fz else "full-zstd not run")
        if n == "snapstore-dir":
            # percentile against the same percentile of the file writer, on the same states
            x = ratio(r["commit_p99_ms"], fz["commit_p99_ms"]) if fz else None
            add("commit p99 <= 1x writing one full zstd-3 file (p99 vs its p99)", n,
                None if x is None else x <= 1, f"{fmt_ratio(x)} of a zstd-3 file's p99",
                f"p99 {fmt_ms(r['commit_p99_ms'])} ms vs {fmt_ms(fz['commit_p99_ms'])} ms; "
                f"per round {per_round_ratios(r, fz, 'p99_ms')}" if fz else "full-zstd not run")
            # the stricter reading, for information: the tail against the file writer's median
            x = ratio(r["commit_p99_ms"], fz["commit_median_ms"]) if fz else None
            add("commit p99 vs a zstd-3 file's median (stricter reading, not a target)", n, None,
                f"{fmt_ratio(x)} of a zstd-3 file's median",
                f"p99 {fmt_ms(r['commit_p99_ms'])} ms vs {fmt_ms(fz['commit_median_ms'])} ms"
                if fz else "full-zstd not run", informational=True)
        # 2. bytes: everything the store holds (records, index, metadata) against naive per-turn deltas
        jp = ok.get("jsonpatch-zstd")
        held = r.get("bytes_apparent")
        if held is None and r.get("store_stats"):
            held = r["store_stats"].get("stored_bytes")
        if held is not None and jp:
            x = ratio(held, jp["bytes_apparent"])
            add("everything stored <= 1.0x naive per-turn jsonpatch + zstd-3 deltas", n,
                None if x is None else x <= 1.0, f"{fmt_ratio(x)} of naive",
                f"{fmt_bytes(held)} vs {fmt_bytes(jp['bytes_apparent'])}")
        if r.get("bytes_apparent") and r.get("bytes_allocated") and r.get("on_disk", True):
            x = ratio(r["bytes_allocated"], r["bytes_apparent"])
            add("allocated disk blocks <= 1.5x the apparent size", n, None if x is None else x <= 1.5,
                f"{fmt_ratio(x)}",
                f"{fmt_bytes(r['bytes_allocated'])} allocated, {fmt_bytes(r['bytes_apparent'])} apparent")
        # 3. rebuild and rollback
        if "rebuild_cold_worst_ratio" in r:
            x = r["rebuild_cold_worst_ratio"]
            rebuilt, loaded = r["rebuild_cold_worst_ratio_ms"]
            add("worst cold rebuild of any retained snapshot <= 3x loading one full compressed state", n,
                x <= 3, f"{fmt_ratio(x)} of load-full",
                f"turn {r['rebuild_cold_worst_ratio_turn']}: {fmt_ms(rebuilt)} ms vs a full load timed beside "
                f"it, {fmt_ms(loaded)} ms; {r['rebuild_cold_count']} snapshots rebuilt cold, slowest "
                f"{fmt_ms(r['rebuild_cold_max_ms'])} ms (turn {r['rebuild_cold_max_turn']})")
            if "read_cold_worst_ratio" in r:
                x = r["read_cold_worst_ratio"]
                read, loaded = r["read_cold_worst_ratio_ms"]
                add("the same read as a restarted process reads it (opening the store and session counted) <= 3x",
                    n, x <= 3, f"{fmt_ratio(x)} of load-full",
                    f"turn {r['read_cold_worst_ratio_turn']}: {fmt_ms(read)} ms vs a full load timed beside it, "
                    f"{fmt_ms(loaded)} ms; median {fmt_ms(r['read_cold_median_ms'])} ms")
            x = ratio(r["rebuild_cold_max_ms"], costs["load_full_ms"])
            add("slowest cold rebuild vs the reference pass's full load (measured minutes apart)", n, None,
                f"{fmt_ratio(x)} of load-full",
                f"{fmt_ms(r['rebuild_cold_max_ms'])} ms vs {fmt_ms(costs['load_full_ms'])} ms", informational=True)
        if "round_trip_beside_ms" in r:
            x = ratio(r["rollback_latest_beside_ms"], r["round_trip_beside_ms"])
            add("rollback to head <= one orjson round trip", n,
                None if x is None else x <= 1, f"{fmt_ratio(x)} of round trip",
                f"{fmt_ms(r['rollback_latest_beside_ms'])} ms vs a round trip of the final state timed beside "
                f"each rollback, {fmt_ms(r['round_trip_beside_ms'])} ms")
        # 4. memory
        mem = r.get("memory")
        if mem:
            # One state is what the state occupies with its own strings (an independent copy);
            # the container-only size of a string-sharing deep copy is printed as well.
            x = ratio(mem["peak_bytes"], costs["one_state_fresh_bytes"])
            x_containers = ratio(mem["peak_bytes"], costs["one_state_deepcopy_bytes"])
            note = (f"peak {fmt_bytes(mem['peak_bytes'])} vs one state "
                    f"{fmt_bytes(costs['one_state_fresh_bytes'])}; "
                    f"{fmt_ratio(x_containers)} of its containers alone")
            if cfg.turns != 1000 or cfg.max_snapshots != 1000:
                note += f" (target is stated for 1,000 turns, max_snapshots=1000; this run: "\
                        f"{cfg.turns} turns, max_snapshots={cfg.max_snapshots})"
            add("peak memory within 5x one state", n, None if x is None else x <= 5,
                f"{fmt_ratio(x)} of one state", note)
        else:
            add("peak memory within 5x one state", n, None, "-", "memory pass skipped")
        # 5. linearity
        lin = r.get("linearity")
        if lin:
            f = lin["fit"]
            add("commit time grows (at most) linearly with state size under fixed change", n,
                f["exponent"] <= 1.2, f"exponent {f['exponent']:.2f}",
                f"slope {f['slope']:.3f} ms/MiB, intercept {f['intercept']:.3f} ms, "
                f"R^2 {f['r2']:.3f}; PASS when the log-log exponent <= 1.2")
        else:
            add("commit time grows (at most) linearly with state size under fixed change", n,
                None, "-", "linearity pass skipped")
    return targets


def commit_rounds_lines(cfg: Config, results: dict[str, dict[str, Any]]) -> list[str]:
    """How the commit figures were taken, and every round's figures, one line per approach."""
    ok = {n: r for n, r in results.items() if "error" not in r and r.get("commit_rounds")}
    if not ok:
        return []
    # the order timing_pass ran, from every approach it was given: one that failed left its places
    # empty without moving the others
    units = schedule_units(cfg, list(results))
    order = commit_schedule(cfg, units)
    L = ["## Commit rounds", ""]
    orders = "; ".join(f"round {i}: {', '.join(f'({u})' if GROUP_SEP in u else u for u in o)}"
                       for i, o in enumerate(order, 1))
    if cfg.commit_rounds == 1:
        text = (f"Commit times were taken in one round, replaying all {cfg.turns} turns into a fresh "
                f"store of every approach ({orders}).")
    else:
        text = (f"Commit times were taken in {cfg.commit_rounds} rounds, each replaying all {cfg.turns} "
                f"turns into a fresh store of every approach, the order rotated round by round and "
                f"every other round reversed ({orders}). "
                "An approach's commit median and p99 above are the median over its rounds of each "
                "round's figure; bytes, rollbacks and rebuilds come from its last round's store.")
    grouped = [u for u in units if GROUP_SEP in u]
    if grouped:
        text += (f" The approaches in brackets were timed interleaved: in one replay per round, each "
                 f"turn's state was committed by each of them in turn ({grouped[0]}), the order rotated "
                 "turn by turn, so that the machine's slow spells fall on all of them alike; the "
                 "commit-time targets compare these.")
    once = [n for n in cfg.one_round if n in ok]
    if once and cfg.commit_rounds > 1:
        text += (f" Timed in one round only (slow, and no commit-time target is measured against them): "
                 f"{', '.join(once)}.")
    L += [text, ""]
    for n, r in ok.items():
        rs = r["commit_rounds"]
        L.append(f"- {ADAPTERS[n].label}: median " + " / ".join(fmt_ms(x["median_ms"]) for x in rs)
                 + " ms, p99 " + " / ".join(fmt_ms(x["p99_ms"]) for x in rs)
                 + " ms (round " + " / ".join(str(x["round"]) for x in rs) + ")")
    L.append("")
    return L


def render_markdown(cfg: Config, info: dict[str, Any], ref: Reference,
                    results: dict[str, dict[str, Any]], targets: list[dict[str, Any]],
                    skipped: dict[str, str], started: str, elapsed: float) -> str:
    c = ref.costs
    L: list[str] = []
    L.append(f"# snapstore benchmark — {cfg.turns} turns")
    L.append("")
    L.append(f"- run: {started} UTC, {elapsed:.0f} s wall, command: `python -m benchmarks.run "
             + " ".join(sys.argv[1:]) + "`")
    L.append(f"- machine: {info.get('cpu_model', '?')}, nproc {info.get('nproc')}, "
             f"{info.get('mem_total_gib', '?')} GiB RAM, Python {info['python']} ({info['platform']})")
    L.append("- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    L.append(f"- workload: seed {cfg.seed}, final state {fmt_bytes(c['state_json_bytes'])} JSON "
             f"({fmt_bytes(c['state_zstd3_bytes'])} as zstd-3), "
             f"sum of all {cfg.turns} states {fmt_bytes(sum(ref.sizes))} JSON; "
             f"max_snapshots={cfg.max_snapshots} (snapstore and deepcopy list; the others keep all)")
    if skipped:
        L.append("- not run: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    L.append("")

    L.append("## Reference costs (final state)")
    L.append("")
    L.append("| operation | median ms |")
    L.append("|---|---:|")
    L.append(f"| orjson dumps + loads round trip | {fmt_ms(c['orjson_roundtrip_ms'])} |")
    L.append(f"| load one full compressed state (read + zstd decompress + orjson.loads) | "
             f"{fmt_ms(c['load_full_ms'])} |")
    L.append(f"| orjson.dumps | {fmt_ms(c['orjson_dumps_ms'])} |")
    L.append(f"| zstd-3 compress of the JSON | {fmt_ms(c['zstd3_compress_ms'])} |")
    L.append(f"| copy.deepcopy | {fmt_ms(c['deepcopy_ms'])} |")
    L.append("")
    L.append(f"One state (tracemalloc size of an independent copy of the final state, "
             f"`orjson.loads`, with its own strings): **{fmt_bytes(c['one_state_fresh_bytes'])}**; "
             f"its containers alone (one `copy.deepcopy`, which shares str/int/float leaves "
             f"with the source): {fmt_bytes(c['one_state_deepcopy_bytes'])}.")
    L.append("")

    L.append("## Results")
    L.append("")
    L.append("| approach | commit median ms | commit p99 ms | bytes on disk (apparent) | "
             "allocated | bytes / snapshot | retained | rollback latest ms | "
             "rollback random ms (median / max) | rollback oldest ms | peak mem | "
             "retained mem | restores verified |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for n, r in results.items():
        if "error" in r:
            L.append(f"| {ADAPTERS[n].label} | ERROR: {r['error']} |" + " |" * 11)
            continue
        mem = r.get("memory") or {}
        ver = "yes" if r["verified"] else f"NO ({len(r['mismatch_turns'])} wrong)"
        L.append(
            f"| {ADAPTERS[n].label} | {fmt_ms(r['commit_median_ms'])} | {fmt_ms(r['commit_p99_ms'])} "
            f"| {fmt_bytes(r['bytes_apparent'])} | {fmt_bytes(r['bytes_allocated'])} "
            f"| {fmt_bytes(r.get('bytes_per_snapshot'))} | {r['retained']} "
            f"| {fmt_ms(r['rollback_latest_ms'])} "
            f"| {fmt_ms(r['rollback_random_median_ms'])} / {fmt_ms(r['rollback_random_max_ms'])} "
            f"| {fmt_ms(r['rollback_oldest_ms'])} (t{r['rollback_oldest_turn']}) "
            f"| {fmt_bytes(mem.get('peak_bytes'))} | {fmt_bytes(mem.get('retained_bytes'))} | {ver} |")
    L.append("")
    notes = []
    if cfg.memory:
        for n, why in cfg.memory_skipped.items():
            if n in results:
                notes.append(f"{ADAPTERS[n].label}: no memory figures ({why}).")
    else:
        notes.append("memory pass skipped (--no-memory).")
    pg = results.get("snapstore-pg")
    if pg and "error" not in pg:
        notes.append(f"{ADAPTERS['snapstore-pg'].label}: bytes = `pg_total_relation_size` (heap + TOAST + "
                     f"indexes) summed over its {pg['files']} tables, reported as both apparent and "
                     f"allocated; object payloads alone (`sum(octet_length(data))`): "
                     f"{fmt_bytes(pg.get('bytes_data'))}.")
    if "git" in results and "git_gc_s" in results["git"]:
        notes.append(f"git: size of .git after one `git gc` ({results['git']['git_gc_s']:.1f} s, "
                     f"not in commit times); auto gc disabled during the run.")
    if notes:
        L += [f"- {x}" for x in notes] + [""]
    L += commit_rounds_lines(cfg, results)

    ok = {n: r for n, r in results.items() if "error" not in r}
    bases = [b for b in BASELINE_ORDER if b in ok]
    if bases and len(ok) > 1:
        L.append("## Ratios vs each baseline")
        L.append("")
        L.append("Each cell is baseline ÷ approach: above 1x the approach is faster / smaller.")
        L.append("")
        for title, key in (("commit median", "commit_median_ms"),
                           ("bytes on disk (apparent)", "bytes_apparent"),
                           ("rollback to latest", "rollback_latest_ms"),
                           ("peak memory", None)):
            L.append(f"**{title}**")
            L.append("")
            L.append("| approach | " + " | ".join(f"vs {ADAPTERS[b].label}" for b in bases) + " |")
            L.append("|---|" + "---:|" * len(bases))
            for n, r in ok.items():
                cells = []
                for b in bases:
                    if key is None:
                        pa = (r.get("memory") or {}).get("peak_bytes")
                        pb = (ok[b].get("memory") or {}).get("peak_bytes")
                        cells.append(fmt_ratio(ratio(pb, pa)) if pa and pb and pa > 0 and pb > 0 else "-")
                    else:
                        cells.append(fmt_ratio(ratio(ok[b].get(key), r.get(key))))
                L.append(f"| {ADAPTERS[n].label} | " + " | ".join(cells) + " |")
            L.append("")

    lin_rows = {n: r["linearity"] for n, r in ok.items() if r.get("linearity")}
    if lin_rows:
        L.append("## Fixed change, growing state (commit median ms)")
        L.append("")
        sizes = [p["size"] for p in next(iter(lin_rows.values()))["points"]]
        L.append("| approach | " + " | ".join(fmt_bytes(s) for s in sizes)
                 + " | slope ms/MiB | R^2 | exponent |")
        L.append("|---|" + "---:|" * (len(sizes) + 3))
        for n, lin in lin_rows.items():
            f = lin["fit"]
            L.append(f"| {ADAPTERS[n].label} | " + " | ".join(fmt_ms(p["median_ms"]) for p in lin["points"])
                     + f" | {f['slope']:.3f} | {f['r2']:.3f} | {f['exponent']:.2f} |")
        L.append("")
        L.append(f"{cfg.lin_commits} timed commits per size, each after the same small change "
                 f"(`workload.fixed_change`). Exponent = slope of log(time) vs log(size): "
                 f"1 is linear, 0 is flat.")
        L.append("")

    L.append("## Targets")
    L.append("")
    L.append("```")
    for t in targets:
        who = f"[{t['approach']}] " if t["approach"] else ""
        line = f"{t['status']:4}  {who}{t['target']}: {t['measured']}"
        if t["note"]:
            line += f"  ({t['note']})"
        L.append(line)
    L.append("```")
    L.append("")
    return "\n".join(L)


def make_chart(cfg: Config, results: dict[str, dict[str, Any]], path: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"matplotlib not importable ({exc.__class__.__name__}); chart skipped"
    ok = {n: r for n, r in results.items() if "error" not in r}
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    ax1, ax2, ax3, ax4 = axes.flat
    win = max(1, cfg.turns // 50)
    for n, r in ok.items():
        lab = ADAPTERS[n].label
        series = r["commit_ms"]
        xs, ys = [], []
        for i in range(0, len(series), win):
            chunk = series[i:i + win]
            xs.append(i + len(chunk) / 2)
            ys.append(statistics.median(chunk))
        ax1.plot(xs, ys, label=lab)
        if r.get("disk_series"):
            ax2.plot([t for t, _a, _b in r["disk_series"]],
                     [a / t for t, a, _b in r["disk_series"]],
                     label=lab + (" (loose objects, before gc)" if n == "git" else ""))
        mem = r.get("memory")
        if mem:
            ax3.plot([p["snapshots"] for p in mem["series"]],
                     [max(p["peak"], 1) / MB for p in mem["series"]], marker=".", label=lab)
        lin = r.get("linearity")
        if lin:
            ax4.plot([p["size"] / MB for p in lin["points"]],
                     [p["median_ms"] for p in lin["points"]], marker="o", label=lab)
    ax1.set(title=f"commit time per snapshot vs turn (median of {win}, last round)", xlabel="turn",
            ylabel="ms", yscale="log")
    ax2.set(title="bytes on disk per snapshot vs turn (apparent, cumulative)", xlabel="turn",
            ylabel="bytes / snapshot", yscale="log")
    ax3.set(title="tracemalloc peak above the live state vs snapshots", xlabel="snapshots held",
            ylabel="MiB", yscale="log")
    ax4.set(title="fixed change, growing state: commit median (log-log)",
            xlabel="state size (MiB JSON)", ylabel="ms", xscale="log", yscale="log")
    lin_sizes = sorted({p["size"] / MB for r in ok.values() if r.get("linearity")
                        for p in r["linearity"]["points"]})
    if lin_sizes:
        from matplotlib.ticker import NullFormatter
        ax4.set_xticks(lin_sizes, [f"{x:.2g}" for x in lin_sizes])
        ax4.xaxis.set_minor_formatter(NullFormatter())
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"snapstore benchmark — {cfg.turns} turns, seed {cfg.seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
