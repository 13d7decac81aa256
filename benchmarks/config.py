"""The benchmark's options and its plan: which approaches run, in which rounds and order.

``parse_args`` reads the command line of ``python -m benchmarks.run`` into a ``Config``;
``commit_schedule`` orders the approaches of each round of commit timing. The passes that run
the plan are in ``benchmarks.run``, the report of what they measured in ``benchmarks.report``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from benchmarks.baselines import ADAPTERS
from benchmarks.workload import DEFAULT_SEED

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
