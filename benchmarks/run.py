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
5. report: markdown + JSON in benchmarks/results/, chart if matplotlib exists.
"""

from __future__ import annotations

import argparse
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

from benchmarks.baselines import ADAPTERS, ZSTD_LEVEL, Adapter
from benchmarks.workload import DEFAULT_SEED, fixed_change, generate, grown_states

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BASELINE_ORDER = ["deepcopy", "full-zstd", "jsonpatch-zstd", "git", "langgraph-sqlite"]
SNAPSTORE_ORDER = ["snapstore-dir", "snapstore-mem", "snapstore-pg"]
KB = 1024
SLOW_MEMORY_TURNS = 300
# Commits of 20-30 ms (make_patch; a git subprocess per turn) make a round of these ~30 s, and no
# commit-time target is measured against them: by default they are timed in one round only.
ONE_ROUND_DEFAULT = ["jsonpatch-zstd", "git"]
# The approaches the commit-time targets compare commit the same state turn by turn, in one replay
# (``commit_round``): a pause or a slow spell of the machine then falls on all of them alike.
INTERLEAVE_DEFAULT = ["full-zstd", "snapstore-dir", "snapstore-mem", "snapstore-pg"]
MB = 1024 * 1024


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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# configuration

@dataclass
class Config:
    turns: int
    seed: int
    max_snapshots: int
    approaches: list[str]
    checkpoint_every: int
    reps: int
    commit_rounds: int
    one_round: list[str]
    interleave: list[str]
    random_targets: int
    memory: bool
    memory_approaches: list[str]
    memory_skipped: dict[str, str]
    linearity: bool
    lin_sizes: list[int]
    lin_commits: int
    out: Path
    workdir: Path | None
    chart: bool
    quick: bool


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="snapstore vs baselines on a synthetic AI game-master session",
    )
    p.add_argument("--turns", type=int, default=None,
                   help="turns to play (default 1000; 100 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="100 turns, fewer repetitions, linearity sweep up to 1 MB")
    p.add_argument("--approaches", default="all",
                   help="comma list of approaches, or all / baselines / snapstore "
                        f"(known: {', '.join(ADAPTERS)})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--max-snapshots", type=int, default=1000,
                   help="retention for snapstore sessions and the deepcopy list (default 1000)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="turns between memory/disk samples (default turns/20)")
    p.add_argument("--reps", type=int, default=None,
                   help="repetitions for reference costs and rollbacks")
    p.add_argument("--commit-rounds", type=int, default=3,
                   help="rounds of commit timing, each replaying the whole workload into a fresh store "
                        "of every approach, the order rotated and every other round reversed; an approach's commit "
                        "median and p99 are the median over its rounds (default 3)")
    p.add_argument("--one-round-approaches", default=",".join(ONE_ROUND_DEFAULT),
                   help="comma list of approaches whose commits are timed in the last round only "
                        f"(default {','.join(ONE_ROUND_DEFAULT)}: slow, and no commit-time target is "
                        "measured against them); 'none' times every approach in every round")
    p.add_argument("--interleave", default=",".join(INTERLEAVE_DEFAULT),
                   help="comma list of approaches whose commits are timed interleaved: one replay per "
                        "round in which each turn's state is committed by each of them in turn, the order "
                        f"rotated turn by turn (default {','.join(INTERLEAVE_DEFAULT)}: the approaches "
                        "the commit-time targets compare); 'none' times every approach in a replay of its own")
    p.add_argument("--random-targets", type=int, default=5,
                   help="seeded random retained snapshots to roll back to")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    p.add_argument("--memory-approaches", default=None,
                   help="comma list (or all) of approaches for the tracemalloc pass (default: every "
                        f"approach run, except jsonpatch-zstd above {SLOW_MEMORY_TURNS} turns: "
                        "tracemalloc slows make_patch ~6x)")
    p.add_argument("--no-linearity", action="store_true", help="skip the fixed-change sweep")
    p.add_argument("--linearity-sizes", default=None,
                   help="comma list of base sizes in KB (default 100,250,500,1000,2000,4000)")
    p.add_argument("--linearity-commits", type=int, default=None,
                   help="timed commits per size (default 40; 15 with --quick)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    p.add_argument("--workdir", type=Path, default=None,
                   help="parent of the temporary directory for on-disk stores")
    p.add_argument("--no-chart", action="store_true")
    a = p.parse_args(argv)

    turns = a.turns if a.turns is not None else (100 if a.quick else 1000)
    if turns < 2:
        p.error("--turns must be at least 2")
    if a.commit_rounds < 1:
        p.error("--commit-rounds must be at least 1")

    known = list(ADAPTERS)
    chosen: list[str] = []
    for word in (w.strip() for w in a.approaches.split(",") if w.strip()):
        if word == "all":
            chosen += known
        elif word == "baselines":
            chosen += BASELINE_ORDER
        elif word == "snapstore":
            chosen += SNAPSTORE_ORDER
        elif word in ADAPTERS:
            chosen.append(word)
        else:
            p.error(f"unknown approach {word!r}; known: {', '.join(known)}")
    chosen = [n for n in known if n in chosen]  # stable order, no duplicates
    def approach_list(text: str, option: str) -> list[str]:
        words = [w.strip() for w in text.split(",") if w.strip()]
        if words == ["none"]:
            return []
        for w in words:
            if w not in ADAPTERS:
                p.error(f"unknown approach {w!r} in {option}")
        return words

    one_round_words = approach_list(a.one_round_approaches, "--one-round-approaches")
    interleave_words = approach_list(a.interleave, "--interleave")
    mem_skipped: dict[str, str] = {}
    if a.memory_approaches:
        words = [w.strip() for w in a.memory_approaches.split(",") if w.strip()]
        if "all" in words:
            words = known
        for w in words:
            if w not in ADAPTERS:
                p.error(f"unknown approach {w!r} in --memory-approaches")
        mem_chosen = [n for n in chosen if n in words]
        mem_skipped = {n: "not in --memory-approaches" for n in chosen if n not in words}
    else:
        # make_patch allocates so much that tracemalloc slows it ~6x: at 1,000 turns
        # its memory pass alone would take 2-4 minutes, more than the rest of the run
        mem_chosen = [n for n in chosen if not (n == "jsonpatch-zstd" and turns > SLOW_MEMORY_TURNS)]
        if len(mem_chosen) < len(chosen):
            mem_skipped["jsonpatch-zstd"] = (
                f"tracemalloc pass skipped above {SLOW_MEMORY_TURNS} turns, too slow; "
                "add --memory-approaches all")

    if a.linearity_sizes:
        sizes = [int(float(s) * 1000) for s in a.linearity_sizes.split(",") if s.strip()]
    elif a.quick:
        sizes = [100_000, 250_000, 500_000, 1_000_000]
    else:
        sizes = [100_000, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000]

    return Config(
        turns=turns,
        seed=a.seed,
        max_snapshots=a.max_snapshots,
        approaches=chosen,
        checkpoint_every=a.checkpoint_every or max(1, turns // 20),
        reps=a.reps or (5 if a.quick else 9),
        commit_rounds=a.commit_rounds,
        one_round=[n for n in chosen if n in one_round_words],
        interleave=[n for n in chosen if n in interleave_words and n not in one_round_words],
        random_targets=a.random_targets,
        memory=not a.no_memory,
        memory_approaches=mem_chosen,
        memory_skipped=mem_skipped,
        linearity=not a.no_linearity,
        lin_sizes=sizes,
        lin_commits=a.linearity_commits or (15 if a.quick else 40),
        out=a.out,
        workdir=a.workdir,
        chart=not a.no_chart,
        quick=a.quick,
    )


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
    if hasattr(adapter, "cold_rebuild"):
        # worst cold rebuild: every retained snapshot (every 4th past 250), each through a fresh
        # handle with nothing cached, checked against the reference state; a snapshot's cost is
        # the best of three such rebuilds (a pause of the machine is not the snapshot's cost)
        sample = retained if len(retained) <= 250 else retained[::4] + retained[-8:]
        # and a full load of the final state is timed beside each rebuild (best of three too): the
        # target reads each rebuild against the load measured under the same conditions
        cold = []
        for handle in dict.fromkeys(sample):
            best = load = None
            for _attempt in range(3):
                state = adapter.cold_rebuild(handle)
                best = adapter.last_cold_ns if best is None else min(best, adapter.last_cold_ns)
                load = ref.load_full_ns() if load is None else min(load, ref.load_full_ns())
            if digest(state) != ref.digests[turn_of[handle] - 1]:
                mismatches.append(turn_of[handle])
            cold.append((ms(best), turn_of[handle], ms(load)))
            del state
        worst = max(cold)
        res["rebuild_cold_max_ms"], res["rebuild_cold_max_turn"] = worst[0], worst[1]
        res["rebuild_cold_median_ms"] = statistics.median(t for t, _turn, _load in cold)
        res["rebuild_cold_count"] = len(cold)
        worst_beside = max(cold, key=lambda c: c[0] / c[2])
        res["rebuild_cold_worst_ratio"] = worst_beside[0] / worst_beside[2]
        res["rebuild_cold_worst_ratio_turn"] = worst_beside[1]
        res["rebuild_cold_worst_ratio_ms"] = (worst_beside[0], worst_beside[2])
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


#: joins the approaches timed interleaved into one unit of a round's order
GROUP_SEP = " + "


def schedule_units(cfg: Config, names: list[str]) -> list[str]:
    """The units a round runs, in ``names``' order: each approach alone, except those timed
    interleaved, which are one unit at the place of the first of them."""
    group = [n for n in names if n in cfg.interleave]
    if len(group) < 2:
        return names
    token = GROUP_SEP.join(group)
    units: list[str] = []
    for n in names:
        unit = token if n in group else n
        if unit not in units:
            units.append(unit)
    return units


def commit_schedule(cfg: Config, names: list[str]) -> list[list[str]]:
    """The approaches of each round, in order.

    The order is rotated round by round, and every other round reversed (A, B, C, D; D, C, B, A
    rotated; C, D, A, B), so that no approach always holds the same place or follows the same
    approach: the first pass of a round, or the one after the heaviest writer, is a place with its
    own conditions (writeback that outlived the pause, a cache the previous pass filled), and
    this spreads them over the approaches instead of billing one. The one-round approaches run
    in the last round, after the others.
    """
    every = [n for n in names if n not in cfg.one_round]
    once = [n for n in names if n in cfg.one_round]
    rounds = []
    for r in range(cfg.commit_rounds):
        k = r % len(every) if every else 0
        order = every[k:] + every[:k]
        # two approaches rotated are already both orders; reversed as well, they would never change
        rounds.append(order[::-1] if r % 2 and len(order) > 2 else order)
    rounds[-1] += once
    return rounds


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
# report

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
