"""Side-by-side benchmark: snapstore against the usual ways to snapshot a game state.

Run from the repository root::

    python -m benchmarks.run --turns 1000          # the issue's figures
    python -m benchmarks.run --quick               # 100 turns, smaller linearity sweep
    python -m benchmarks.run --approaches full-zstd,jsonpatch-zstd,snapstore-dir

Everything happens in one process, one run. Phases:

1. reference pass: play the workload once, record a canonical digest of every
   turn's state (to verify restores) and the reference costs on the final
   state (orjson round trip, loading one full compressed state, deepcopy);
2. timing pass, in ``--commit-rounds`` rounds: each round replays the same
   deterministic workload into a fresh store of every approach in turn (the
   order rotated, every other round reversed), timing each ``commit`` call alone and
   reading bytes on disk at checkpoints (untimed); the approaches the
   commit-time targets compare (``--interleave``) share one replay, committing
   each turn's state one after another; an approach's commit
   figures are the median over its rounds. On the store of its last round it
   then times rollbacks to the latest, to seeded random retained snapshots and
   to the oldest, and checks every restored state against the digests;
3. memory pass, per approach, under tracemalloc (separate so tracing does not
   distort the timings);
4. linearity pass: states of growing size receiving the same small change;
5. report (``benchmarks.report``): markdown + JSON in benchmarks/results/, chart if matplotlib exists.

The options and the order of the rounds are ``benchmarks.config``'s.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # executed as ``python benchmarks/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import xxhash
import zstandard

from benchmarks.baselines import ADAPTERS, ZSTD_LEVEL, Adapter, SnapstoreAdapter
from benchmarks.config import GROUP_SEP, MB, Config, commit_schedule, parse_args, schedule_units
from benchmarks.report import evaluate_targets, fmt_bytes, fmt_ms, make_chart, render_markdown
from benchmarks.workload import fixed_change, generate, grown_states

# ---------------------------------------------------------------------------
# small helpers

def digest(state: Any) -> str:
    """Canonical digest: sorted keys, and 1 / 1.0 / true stay distinct."""
    return xxhash.xxh3_128_hexdigest(orjson.dumps(state, option=orjson.OPT_SORT_KEYS))


def ms(ns: float) -> float:
    return ns / 1e6


def pct(values: Sequence[float], q: float) -> float:
    """Percentile by linear interpolation between closest ranks (q in [0, 100])."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def timed_ns(fn: Callable[[], Any]) -> tuple[int, Any]:
    t0 = time.perf_counter_ns()
    out = fn()
    return time.perf_counter_ns() - t0, out


def median_ns(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up
    return statistics.median(timed_ns(fn)[0] for _ in range(reps))


def linfit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least squares y = a + b x; also the log-log exponent (b in y ~ x^b)."""
    n = len(xs)
    if n < 2:
        return {"slope": float("nan"), "intercept": float("nan"), "r2": float("nan"),
                "exponent": float("nan")}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx else float("nan")
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1 - ss_res / ss_tot if ss_tot else 1.0
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-9)) for y in ys]
    mlx, mly = sum(lx) / n, sum(ly) / n
    slxx = sum((x - mlx) ** 2 for x in lx)
    exponent = (sum((x - mlx) * (y - mly) for x, y in zip(lx, ly, strict=True)) / slxx) if slxx else float("nan")
    return {"slope": slope, "intercept": intercept, "r2": r2, "exponent": exponent}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# machine description

def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["mem_total_gib"] = round(int(line.split()[1]) * 1024 / 2**30, 1)
                    break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for dist in ("orjson", "zstandard", "jsonpatch", "xxhash", "matplotlib",
                 "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "snapstore"):
        with contextlib.suppress(Exception):
            versions[dist] = metadata.version(dist)
    if shutil.which("git"):
        with contextlib.suppress(Exception):
            versions["git"] = subprocess.run(["git", "--version"], capture_output=True,
                                             text=True, check=True).stdout.strip().removeprefix("git version ")
    info["versions"] = versions
    return info


# ---------------------------------------------------------------------------
# phase 1: reference pass and reference costs

@dataclass
class Reference:
    digests: list[str]            # index turn-1
    sizes: list[int]              # compact JSON bytes per turn
    final_json: bytes
    costs: dict[str, Any] = field(default_factory=dict)
    # the final state as one zstd-3 file, written by ``reference_costs`` (its load-full figure)
    full_file: Path | None = None
    _dctx: zstandard.ZstdDecompressor = field(default_factory=zstandard.ZstdDecompressor, repr=False)

    @functools.cached_property
    def final_state(self) -> Any:
        return orjson.loads(self.final_json)

    def round_trip(self) -> Any:
        """One orjson round trip of the final state."""
        return orjson.loads(orjson.dumps(self.final_state))

    def load_full(self) -> Any:
        """Loading the final state from one zstd-3 file (``reference_costs`` writes it)."""
        assert self.full_file is not None, "reference_costs writes the file"
        with open(self.full_file, "rb") as f:
            return orjson.loads(self._dctx.decompress(f.read()))

    def round_trip_ns(self) -> int:
        """``round_trip`` timed (beside an approach's rollback)."""
        return timed_ns(self.round_trip)[0]

    def load_full_ns(self) -> int:
        """``load_full`` timed (beside an approach's cold rebuild)."""
        return timed_ns(self.load_full)[0]


def reference_pass(cfg: Config) -> Reference:
    digests: list[str] = []
    sizes: list[int] = []
    raw = b""
    for state in generate(cfg.turns, seed=cfg.seed):
        raw = orjson.dumps(state)
        sizes.append(len(raw))
        digests.append(digest(state))
    # determinism check: a second generator gives the same final state
    last: dict[str, Any] = {}
    for last in generate(cfg.turns, seed=cfg.seed):  # noqa: B007 - only the final state matters
        pass
    if digest(last) != digests[-1]:
        raise RuntimeError("workload is not deterministic")
    return Reference(digests, sizes, raw)


def reference_costs(ref: Reference, tmp: Path, reps: int) -> dict[str, Any]:
    final = ref.final_state
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    blob = cctx.compress(ref.final_json)
    path = tmp / "final.json.zst"
    path.write_bytes(blob)
    ref.full_file = path  # kept for the loads timed beside the cold rebuilds; the run's folder removes it
    out: dict[str, Any] = {
        "state_json_bytes": len(ref.final_json),
        "state_zstd3_bytes": len(blob),
        "orjson_roundtrip_ms": ms(median_ns(ref.round_trip, reps)),
        "orjson_dumps_ms": ms(median_ns(lambda: orjson.dumps(final), reps)),
        "zstd3_compress_ms": ms(median_ns(lambda: cctx.compress(ref.final_json), reps)),
        "load_full_ms": ms(median_ns(ref.load_full, reps)),
        "deepcopy_ms": ms(median_ns(lambda: copy.deepcopy(final), reps)),
    }
    # "one state" = tracemalloc size of an independent copy (orjson.loads: its own
    # strings), what a state occupies in a process. A deep copy shares the immutable
    # leaves (str, int, float) with its source, so its size (containers only) is
    # reported alongside.
    gc.collect()
    tracemalloc.start()
    dup = copy.deepcopy(final)
    out["one_state_deepcopy_bytes"] = tracemalloc.get_traced_memory()[0]
    del dup
    tracemalloc.stop()
    gc.collect()
    tracemalloc.start()
    fresh = orjson.loads(ref.final_json)
    out["one_state_fresh_bytes"] = tracemalloc.get_traced_memory()[0]
    del fresh
    tracemalloc.stop()
    return out


# ---------------------------------------------------------------------------
# phase 2: timing pass

def settle_disk(pause: float = 2.0) -> None:
    """Flush what earlier passes wrote and deleted before timing the next one.

    The baselines write hundreds of MiB (LangGraph's SQLite file, one zstd file per turn) and
    delete them after their pass; without this the kernel's writeback of that work lands in the
    next approach's timings (a directory commit measured 4 ms instead of 1 ms right after them).
    """
    os.sync()
    time.sleep(pause)
    # sync(2) starts the writeback; on a slow disk pages can stay dirty after it returns, and the
    # next pass (or another program on the machine) would pay for them: wait until little is left
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pending_writeback() > 16 << 20:
        os.sync()
        time.sleep(0.5)


def pending_writeback() -> int:
    """Bytes the kernel still has to write back (Dirty + Writeback in /proc/meminfo; 0 elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return sum(int(fields[k].split()[0]) * 1024 for k in ("Dirty", "Writeback") if k in fields)
    except (OSError, ValueError):
        return 0


def commit_figures(commit_ns: list[int], wall_s: float, disk_series: list[tuple[int, int, int]]) -> dict[str, Any]:
    """A replay's commit figures from its commit times (ns)."""
    commits_ms = [ms(x) for x in commit_ns]
    return {
        "median_ms": statistics.median(commits_ms),
        "p99_ms": pct(commits_ms, 99),
        "mean_ms": statistics.fmean(commits_ms),
        "total_s": sum(commits_ms) / 1000,
        "wall_s": wall_s,
        "commit_ms": commits_ms,
        "disk_series": disk_series,
    }


def measure_store(adapter: Adapter, cfg: Config, ref: Reference, turn_of: dict[Any, int]) -> dict[str, Any]:
    """Everything but commit time, once, on a store that holds the whole workload."""
    res: dict[str, Any] = {}
    t_fin = time.perf_counter()
    adapter.finalize()
    res["finalize_s"] = time.perf_counter() - t_fin
    du = adapter.bytes_stored()
    res["bytes_apparent"] = du.apparent if du else None
    res["bytes_allocated"] = du.allocated if du else None
    res["files"] = du.files if du else None
    if hasattr(adapter, "data_bytes"):  # database store: payload bytes besides the table total
        res["bytes_data"] = adapter.data_bytes()

    retained = adapter.retained()
    res["retained"] = len(retained)
    if du:
        res["bytes_per_snapshot"] = du.apparent / max(1, len(retained))
        res["allocated_per_snapshot"] = du.allocated / max(1, len(retained))

    # rollbacks: latest, seeded random retained, oldest; each state verified
    mismatches: list[int] = []

    def measure(handle: Any, reps: int) -> float:
        times = []
        state = None
        for _ in range(reps):
            dt, state = timed_ns(lambda: adapter.rollback(handle))
            times.append(dt)
        turn = turn_of[handle]
        if digest(state) != ref.digests[turn - 1]:
            mismatches.append(turn)
        del state
        return ms(statistics.median(times))

    rreps = max(1, cfg.reps // 3)
    # each rollback to the head is timed beside a round trip (the rollback-to-head target compares
    # the two), so that both are measured under the same conditions of the machine
    beside_rollback, beside_trip = [], []
    state = None
    for _ in range(cfg.reps):
        dt, state = timed_ns(lambda: adapter.rollback(retained[-1]))
        beside_rollback.append(dt)
        beside_trip.append(ref.round_trip_ns())
    if digest(state) != ref.digests[turn_of[retained[-1]] - 1]:
        mismatches.append(turn_of[retained[-1]])
    del state
    res["rollback_latest_ms"] = res["rollback_latest_beside_ms"] = ms(statistics.median(beside_rollback))
    res["round_trip_beside_ms"] = ms(statistics.median(beside_trip))
    rng = random.Random(cfg.seed + 1)
    middle = retained[1:-1] or retained
    picks = rng.sample(middle, k=min(cfg.random_targets, len(middle)))
    rand_times = [measure(h, rreps) for h in picks]
    res["rollback_random_turns"] = [turn_of[h] for h in picks]
    res["rollback_random_ms"] = rand_times
    res["rollback_random_median_ms"] = statistics.median(rand_times)
    res["rollback_random_max_ms"] = max(rand_times)
    res["rollback_oldest_ms"] = measure(retained[0], rreps)
    res["rollback_oldest_turn"] = turn_of[retained[0]]
    res["rollback_max_ms"] = max(res["rollback_latest_ms"], res["rollback_random_max_ms"],
                                 res["rollback_oldest_ms"])
    if isinstance(adapter, SnapstoreAdapter):
        # worst cold rebuild: every retained snapshot (every 4th past 250), each through a fresh
        # handle with nothing cached, checked against the reference state; a snapshot's cost is
        # the best of three such rebuilds (a pause of the machine is not the snapshot's cost)
        sample = retained if len(retained) <= 250 else retained[::4] + retained[-8:]
        # and a full load of the final state is timed beside each rebuild (best of three too): the
        # target reads each rebuild against the load measured under the same conditions
        # and the same snapshot read as a restarted process reads it (opening the store and the
        # session counted: no listing first), best of three too
        cold = []
        reads = []
        for handle in dict.fromkeys(sample):
            rebuilt: list[int] = []
            loads: list[int] = []
            opened: list[int] = []
            for _attempt in range(3):
                state = adapter.cold_rebuild(handle)
                rebuilt.append(adapter.last_cold_ns)
                loads.append(ref.load_full_ns())
                read = adapter.cold_read(handle)
                opened.append(adapter.last_cold_read_ns)
                if digest(read) != ref.digests[turn_of[handle] - 1]:
                    mismatches.append(turn_of[handle])
                del read
            best, load = min(rebuilt), min(loads)
            if digest(state) != ref.digests[turn_of[handle] - 1]:
                mismatches.append(turn_of[handle])
            cold.append((ms(best), turn_of[handle], ms(load)))
            reads.append((ms(min(opened)), turn_of[handle], ms(load)))
            del state
        worst = max(cold)
        res["rebuild_cold_max_ms"], res["rebuild_cold_max_turn"] = worst[0], worst[1]
        res["rebuild_cold_median_ms"] = statistics.median(t for t, _turn, _load in cold)
        res["rebuild_cold_count"] = len(cold)
        worst_beside = max(cold, key=lambda c: c[0] / c[2])
        res["rebuild_cold_worst_ratio"] = worst_beside[0] / worst_beside[2]
        res["rebuild_cold_worst_ratio_turn"] = worst_beside[1]
        res["rebuild_cold_worst_ratio_ms"] = (worst_beside[0], worst_beside[2])
        worst_read = max(reads, key=lambda c: c[0] / c[2])
        res["read_cold_worst_ratio"] = worst_read[0] / worst_read[2]
        res["read_cold_worst_ratio_turn"] = worst_read[1]
        res["read_cold_worst_ratio_ms"] = (worst_read[0], worst_read[2])
        res["read_cold_median_ms"] = statistics.median(t for t, _turn, _load in reads)
        st = adapter.stats()
        keys = ("stored_bytes", "segments", "keyframes", "longest_chain", "apparent_bytes", "allocated_bytes")
        res["store_stats"] = {k: st.get(k) for k in keys}
    res["verified"] = not mismatches
    res["mismatch_turns"] = sorted(set(mismatches))
    if hasattr(adapter, "gc_seconds"):
        res["git_gc_s"] = adapter.gc_seconds
    return res


def commit_round(classes: list[type[Adapter]], cfg: Config, ref: Reference, root: Path, round_no: int,
                 measure_rest: bool) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """One round of one approach, or of several committing the same states turn by turn.

    The whole workload goes into each approach's fresh store, each ``commit`` timed alone; with
    ``measure_rest``, everything but commit time is then measured on those stores. Several
    approaches (interleaved) commit each turn's state one after another, the order rotated turn by
    turn so that no approach always goes first or follows the same one. Whatever the machine does
    meanwhile (another tenant, writeback, a slow spell of a few seconds) then falls on every
    approach alike, where rounds of one approach after another give it to whichever ran then.
    Returns the figures of each approach, and the failures (an approach that fails leaves the
    rotation; the others go on).
    """
    adapters: dict[str, Adapter] = {}
    failures: dict[str, dict[str, Any]] = {}
    figures: dict[str, dict[str, Any]] = {}
    gc.collect()
    settle_disk()
    try:
        for cls in classes:
            adapter = cls(max_snapshots=cfg.max_snapshots)
            try:
                adapter.open(root / f"time-{cls.name}-{round_no}")
            except Exception as exc:
                failures[cls.name] = failure(cls.name, exc)
                continue
            adapters[cls.name] = adapter
        active = list(adapters)
        commit_ns: dict[str, list[int]] = {n: [] for n in active}
        turn_of: dict[str, dict[Any, int]] = {n: {} for n in active}
        disk_series: dict[str, list[tuple[int, int, int]]] = {n: [] for n in active}
        t_start = time.perf_counter()
        for turn, state in enumerate(generate(cfg.turns, seed=cfg.seed), 1):
            if not active:
                break
            k = turn % len(active)
            for name in active[k:] + active[:k]:
                try:
                    t0 = time.perf_counter_ns()
                    handle = adapters[name].commit(state, turn)
                    commit_ns[name].append(time.perf_counter_ns() - t0)
                except Exception as exc:
                    failures[name] = failure(name, exc)
                    active.remove(name)
                    continue
                turn_of[name][handle] = turn
            if turn % cfg.checkpoint_every == 0 or turn == cfg.turns:
                for name in active:
                    du = adapters[name].bytes_stored()
                    if du is not None:
                        disk_series[name].append((turn, du.apparent, du.allocated))
        wall_s = time.perf_counter() - t_start
        for name in active:
            fig = commit_figures(commit_ns[name], wall_s, disk_series[name])
            fig["round"] = round_no
            fig["interleaved_with"] = [n for n in adapters if n != name]
            if measure_rest:
                try:
                    fig["store"] = measure_store(adapters[name], cfg, ref, turn_of[name])
                except Exception as exc:
                    failures[name] = failure(name, exc)
                    continue
            figures[name] = fig
    finally:
        for name, adapter in adapters.items():
            try:
                adapter.close()
            except Exception as exc:  # fails this approach, and the others' stores are still closed
                failures[name] = failure(name, exc)
            finally:
                shutil.rmtree(root / f"time-{name}-{round_no}", ignore_errors=True)
        gc.collect()
    return {n: fig for n, fig in figures.items() if n not in failures}, failures


def combine_rounds(name: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """An approach's result: its commit figures the median over rounds, the rest from the last."""
    last = rounds[-1]
    res: dict[str, Any] = {"name": name, **last["store"]}
    res["commit_median_ms"] = statistics.median(r["median_ms"] for r in rounds)
    res["commit_p99_ms"] = statistics.median(r["p99_ms"] for r in rounds)
    res["commit_mean_ms"] = statistics.median(r["mean_ms"] for r in rounds)
    res["commit_total_s"] = statistics.median(r["total_s"] for r in rounds)
    res["wall_s"] = sum(r["wall_s"] for r in rounds)
    res["commit_ms"] = last["commit_ms"]        # the last round's, whose store the rest measured
    res["disk_series"] = last["disk_series"]
    res["commit_rounds"] = [{k: v for k, v in r.items() if k not in ("store", "disk_series")}
                            for r in rounds]
    return res


def failure(name: str, exc: Exception) -> dict[str, Any]:
    """An approach's result when its timing pass raised (logged as it is recorded)."""
    log(f"  ERROR {name}: {exc.__class__.__name__}: {exc}")
    return {"name": name, "error": f"{exc.__class__.__name__}: {exc}"[:300], "traceback": traceback.format_exc()}


def timing_pass(selected: list[type[Adapter]], cfg: Config, ref: Reference,
                root: Path) -> dict[str, dict[str, Any]]:
    names = [cls.name for cls in selected]
    units = schedule_units(cfg, names)
    schedule = commit_schedule(cfg, units)
    last_round = {u: max(i for i, order in enumerate(schedule, 1) if u in order) for u in units}
    rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    failed: dict[str, dict[str, Any]] = {}
    for i, order in enumerate(schedule, 1):
        for pos, unit in enumerate(order, 1):
            members = [m for m in unit.split(GROUP_SEP) if m not in failed]
            if not members:
                continue
            what = f"interleaved {', '.join(members)}" if GROUP_SEP in unit else unit
            log(f"timing pass, round {i}/{len(schedule)}: {what}")
            figs, errors = commit_round([ADAPTERS[m] for m in members], cfg, ref, root, i,
                                        measure_rest=i == last_round[unit])
            failed.update(errors)
            for m, fig in figs.items():
                fig["position"] = pos
                rounds[m].append(fig)
                replay = "the group's replay" if len(members) > 1 else "replay"
                log(f"  {m}: commit median {fmt_ms(fig['median_ms'])} ms, p99 {fmt_ms(fig['p99_ms'])} ms "
                    f"({replay} {fig['wall_s']:.1f} s)")
                st = fig.get("store")
                if st:
                    log(f"  {m}: bytes {fmt_bytes(st['bytes_apparent'])}, rollback latest "
                        f"{fmt_ms(st['rollback_latest_ms'])} ms, verified {st['verified']}")
    return {n: failed[n] if n in failed else combine_rounds(n, rounds[n]) for n in names}


# ---------------------------------------------------------------------------
# phase 3: memory pass

def checkpoints(cfg: Config) -> set[int]:
    pts = set(range(cfg.checkpoint_every, cfg.turns + 1, cfg.checkpoint_every))
    pts.add(cfg.turns)
    return pts


def workload_memory(cfg: Config) -> dict[int, int]:
    """Traced bytes held by the workload alone (the live game state) at each checkpoint.

    The state is serialised once per turn (result discarded): CPython caches a
    UTF-8 copy inside every non-ASCII str the first time a serialiser encodes
    it, and that cache belongs to the caller's live state, not to the store.
    """
    pts = checkpoints(cfg)
    base: dict[int, int] = {}
    gc.collect()
    tracemalloc.start()
    try:
        for turn, state in enumerate(generate(cfg.turns, seed=cfg.seed), 1):
            orjson.dumps(state)
            if turn in pts:
                base[turn] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return base


def memory_pass(cls: type[Adapter], cfg: Config, base: dict[int, int], root: Path) -> dict[str, Any]:
    """tracemalloc current/peak at checkpoints, minus what the live game state holds."""
    pts = checkpoints(cfg)
    workdir = root / f"mem-{cls.name}"
    adapter = cls(max_snapshots=cfg.max_snapshots)
    series: list[dict[str, int]] = []
    gc.collect()
    tracemalloc.start()
    try:
        adapter.open(workdir)
        for turn, state in enumerate(generate(cfg.turns, seed=cfg.seed), 1):
            adapter.commit(state, turn)
            if turn in pts:
                cur, peak = tracemalloc.get_traced_memory()
                held = len(adapter.retained())   # after reading, before the reset
                series.append({"turn": turn, "snapshots": held,
                               "current": cur - base[turn], "peak": peak - base[turn]})
                tracemalloc.reset_peak()
        tracemalloc.stop()
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        try:
            adapter.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            gc.collect()
    return {
        "series": series,
        "peak_bytes": max(r["peak"] for r in series),
        "retained_bytes": series[-1]["current"],
    }


# ---------------------------------------------------------------------------
# phase 4: linearity (fixed change, growing state)

def linearity_pass(cls: type[Adapter], cfg: Config, bases: list[tuple[int, bytes]],
                   root: Path) -> dict[str, Any]:
    points = []
    for size, raw in bases:
        workdir = root / f"lin-{cls.name}-{size}"
        adapter = cls(max_snapshots=cfg.max_snapshots)
        state = orjson.loads(raw)
        gc.collect()
        settle_disk(0.5)
        adapter.open(workdir)
        try:
            adapter.commit(state, 0)          # first snapshot (full), not timed
            times = []
            for i in range(cfg.lin_commits):
                fixed_change(state, i)
                t0 = time.perf_counter_ns()
                adapter.commit(state, i + 1)
                times.append(time.perf_counter_ns() - t0)
        finally:
            adapter.close()
            shutil.rmtree(workdir, ignore_errors=True)
        points.append({"size": size, "median_ms": ms(statistics.median(times)),
                       "p90_ms": ms(pct(times, 90))})
    fit = linfit([p["size"] / MB for p in points], [p["median_ms"] for p in points])
    return {"points": points, "fit": fit}


# ---------------------------------------------------------------------------
# main

def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    t_all = time.perf_counter()
    info = machine_info()

    selected: list[type[Adapter]] = []
    skipped: dict[str, str] = {}
    for n in cfg.approaches:
        cls = ADAPTERS[n]
        avail, why = cls.available()
        if avail:
            selected.append(cls)
        else:
            skipped[n] = why
            log(f"skip {n}: {why}")

    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.workdir is not None:
        cfg.workdir.mkdir(parents=True, exist_ok=True)  # the stores go in a folder made there
    with tempfile.TemporaryDirectory(prefix="snapstore-bench-", dir=cfg.workdir) as tmpname:
        root = Path(tmpname)
        log(f"reference pass: {cfg.turns} turns, seed {cfg.seed}")
        ref = reference_pass(cfg)
        ref.costs = reference_costs(ref, root, cfg.reps)
        c = ref.costs
        log(f"  final state {fmt_bytes(c['state_json_bytes'])}; orjson round trip "
            f"{fmt_ms(c['orjson_roundtrip_ms'])} ms; load-full {fmt_ms(c['load_full_ms'])} ms; "
            f"deepcopy {fmt_ms(c['deepcopy_ms'])} ms")

        results = timing_pass(selected, cfg, ref, root)

        if cfg.memory:
            log("memory pass: workload alone")
            base = workload_memory(cfg)
            for cls in selected:
                if "error" in results.get(cls.name, {}) or cls.name not in cfg.memory_approaches:
                    continue
                log(f"memory pass: {cls.name}")
                t0 = time.perf_counter()
                try:
                    results[cls.name]["memory"] = memory_pass(cls, cfg, base, root)
                    m = results[cls.name]["memory"]
                    log(f"  peak {fmt_bytes(m['peak_bytes'])}, retained "
                        f"{fmt_bytes(m['retained_bytes'])} ({time.perf_counter() - t0:.1f} s)")
                except Exception as exc:
                    results[cls.name]["memory_error"] = f"{exc.__class__.__name__}: {exc}"
                    log(f"  ERROR {exc.__class__.__name__}: {exc}")

        if cfg.linearity:
            log("linearity pass: building base states " +
                ", ".join(fmt_bytes(s) for s in cfg.lin_sizes))
            bases = grown_states(cfg.lin_sizes, seed=cfg.seed)
            for cls in selected:
                if "error" in results.get(cls.name, {}):
                    continue
                log(f"linearity pass: {cls.name}")
                try:
                    results[cls.name]["linearity"] = linearity_pass(cls, cfg, bases, root)
                    f = results[cls.name]["linearity"]["fit"]
                    log(f"  slope {f['slope']:.3f} ms/MiB, R^2 {f['r2']:.3f}, "
                        f"exponent {f['exponent']:.2f}")
                except Exception as exc:
                    results[cls.name]["linearity_error"] = f"{exc.__class__.__name__}: {exc}"
                    log(f"  ERROR {exc.__class__.__name__}: {exc}")

    elapsed = time.perf_counter() - t_all
    targets = evaluate_targets(cfg, ref, results)
    md = render_markdown(cfg, info, ref, results, targets, skipped, started, elapsed)

    stem = f"{cfg.turns}"
    md_path = cfg.out / f"results-{stem}.md"
    json_path = cfg.out / f"results-{stem}.json"
    png_path = cfg.out / f"chart-{stem}.png"
    md_path.write_text(md, encoding="utf-8")
    raw = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
        "started_utc": started,
        "elapsed_s": elapsed,
        "machine": info,
        "reference": {"costs": ref.costs, "state_sizes": ref.sizes},
        "skipped": skipped,
        "results": results,
        "targets": targets,
    }
    json_path.write_bytes(orjson.dumps(raw, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    chart_msg = make_chart(cfg, results, png_path) if cfg.chart else "chart disabled (--no-chart)"
    print(md)
    log(f"wrote {md_path}")
    log(f"wrote {json_path}")
    log(chart_msg or f"wrote {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
