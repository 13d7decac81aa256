"""The store's targets on sessions of other shapes than ``benchmarks.run``'s RPG session.

``benchmarks.run``'s workload is mostly a transcript that grows by appends. Users' states are
not all like it, so this runs seven other kinds of session, each on a directory store of its own,
and gives for each the ratios the targets of ``benchmarks.run`` are stated in, measured in the
same loop on the same states:

* ``messages``: a chat history and nothing else, one message (200 to 2,000 characters, some of
  them not ASCII) appended a turn, as a LangGraph agent's state grows;
* ``entities``: a table of 5,000 small entities, 50 of them given a new hit-point count and
  position a turn (random numbers: what changed does not compress);
* ``inserts``: a list of 3,000 items, one inserted and one removed at random places a turn;
* ``document``: one long text (80,000 words), one word of it rewritten a turn;
* ``shuffles``: a deck of 2,000 cards, one added a turn and all shuffled every tenth turn;
* ``markets``: a trading world of 1,500 small records (prices, stocks, positions, moods), a
  tenth to two fifths of whose numbers move each turn: thousands of changes a turn, spread over
  the whole state;
* ``heatmap``: a field of 5,000 numbers in one list (a map's heat, a simulation's grid), every
  one of them moved a little each turn.

For each: the commit median and p99 against writing the same state as one zstd-3 file, the
bytes the store holds against the naive per-turn deltas (``jsonpatch.make_patch`` + zstd-3), the
worst cold rebuild (a fresh store handle whose index was read first, best of three) of about 60
snapshots against loading the last state's zstd-3 file, best of three, timed beside it, and the
worst read as a restarted process reads it (store and session opened, no listing, all timed).

    python -m benchmarks.turn_shapes [--turns 300] [--shapes messages,entities]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import zstandard

from .baselines import import_snapstore
from .run import digest, timed_ns
from .timing import cold_read_ns, cold_rebuild_ns

RESULTS = Path(__file__).parent / "results"
SAMPLED_REBUILDS = 60

Turns = Iterator[dict[str, Any]]


def _messages(turns: int, rng: random.Random) -> Turns:
    letters = "abcdefghij klmnopqrstuvwxyz éàü.,"
    state: dict[str, Any] = {"messages": [], "meta": {"turn": 0}}
    for turn in range(turns):
        text = "".join(rng.choice(letters) for _ in range(rng.randint(200, 2000)))
        state["messages"].append({"role": ("user", "assistant")[turn % 2], "content": text, "id": f"m{turn}"})
        state["meta"]["turn"] = turn
        yield state


def _entities(turns: int, rng: random.Random) -> Turns:
    table = {
        f"e{i}": {"hp": rng.randint(1, 100), "x": rng.random(), "name": f"npc {i}", "tags": ["a"]} for i in range(5000)
    }
    state = {"entities": table}
    for _ in range(turns):
        for _ in range(50):
            entity = table[f"e{rng.randrange(5000)}"]
            entity["hp"], entity["x"] = rng.randint(1, 100), rng.random()
        yield state


def _inserts(turns: int, rng: random.Random) -> Turns:
    items = [{"id": i, "v": f"item {i}"} for i in range(3000)]
    state = {"items": items}
    for turn in range(turns):
        items.insert(rng.randrange(len(items)), {"id": 10_000 + turn, "v": f"new {turn}"})
        del items[rng.randrange(len(items))]
        yield state


def _document(turns: int, rng: random.Random) -> Turns:
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(6)) for _ in range(80_000)]
    state: dict[str, Any] = {"text": "", "edits": 0}
    for turn in range(turns):
        words[rng.randrange(len(words))] = f"edit{turn}"
        state["text"], state["edits"] = " ".join(words), turn
        yield state


def _shuffles(turns: int, rng: random.Random) -> Turns:
    state: dict[str, Any] = {"deck": [f"card {i} of the long deck" for i in range(2000)], "turn": 0}
    for turn in range(turns):
        if turn % 10 == 9:
            rng.shuffle(state["deck"])
        else:
            state["deck"].append(f"card {2000 + turn} of the long deck")
        state["turn"] = turn
        yield state


def _markets(turns: int, rng: random.Random) -> Turns:
    goods = ["grain", "salt", "iron", "wool", "wine", "spice"]
    traders: dict[str, dict[str, Any]] = {
        f"trader-{i:04d}": {
            "purse": rng.randint(0, 5000),
            "at": [rng.randint(0, 999), rng.randint(0, 999)],
            "mood": round(rng.uniform(-1, 1), 2),
            "stock": {good: rng.randint(0, 50) for good in goods},
        }
        for i in range(1300)
    }
    towns: dict[str, dict[str, dict[str, Any]]] = {
        f"town-{i:03d}": {g: {"price": round(rng.uniform(1, 90), 2), "supply": rng.randint(0, 800)} for g in goods}
        for i in range(200)
    }
    state: dict[str, Any] = {"day": 0, "traders": traders, "towns": towns, "news": []}
    for day in range(turns):
        busy = rng.uniform(0.1, 0.4)
        for trader in traders.values():
            if rng.random() < busy:
                trader["purse"] += rng.randint(-40, 60)
                trader["at"] = [trader["at"][0] + rng.randint(-2, 2), trader["at"][1] + rng.randint(-2, 2)]
            if rng.random() < busy:
                good = rng.choice(goods)
                trader["stock"][good] = max(0, trader["stock"][good] + rng.randint(-5, 5))
                trader["mood"] = round(max(-1.0, min(1.0, trader["mood"] + rng.uniform(-0.1, 0.1))), 2)
        for market in towns.values():
            for offer in market.values():
                if rng.random() < busy:
                    offer["price"] = round(max(0.5, offer["price"] * rng.uniform(0.97, 1.04)), 2)
                    offer["supply"] = max(0, offer["supply"] + rng.randint(-20, 20))
        state["news"] = [*state["news"][-29:], f"day {day}: " + " ".join(rng.choice(goods) for _ in range(12))]
        state["day"] = day
        yield state


def _heatmap(turns: int, rng: random.Random) -> Turns:
    state: dict[str, Any] = {"turn": 0, "field": [round(rng.uniform(0, 40), 3) for _ in range(5000)]}
    for turn in range(turns):
        state["field"] = [round(heat + rng.uniform(-0.5, 0.5), 3) for heat in state["field"]]
        state["turn"] = turn
        yield state


SHAPES: dict[str, Callable[[int, random.Random], Turns]] = {
    "messages": _messages,
    "entities": _entities,
    "inserts": _inserts,
    "document": _document,
    "shuffles": _shuffles,
    "markets": _markets,
    "heatmap": _heatmap,
}


def run_shape(shape: str, turns: int, workdir: Path) -> dict[str, Any]:
    snapstore = import_snapstore()
    folder = workdir / shape
    store = snapstore.SnapshotStore.open(folder / "store")
    session = store.session("s", max_snapshots=turns)
    compressor, decompressor = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    full_file = folder / "state.json.zst"
    commits: list[int] = []
    files: list[int] = []
    ids: list[str] = []
    digests: list[str] = []
    naive = 0
    previous: Any = None
    for state in SHAPES[shape](turns, random.Random(11)):
        began = time.perf_counter_ns()
        ids.append(session.commit(state).id)
        commits.append(time.perf_counter_ns() - began)
        began = time.perf_counter_ns()
        data = orjson.dumps(state)
        full_file.write_bytes(compressor.compress(data))
        files.append(time.perf_counter_ns() - began)
        current = orjson.loads(data)  # a copy: the workload changes its state in place
        digests.append(digest(current))
        if previous is not None:
            naive += len(compressor.compress(orjson.dumps(jsonpatch.make_patch(previous, current).patch)))
        previous = current
    stored = store.stats()["stored_bytes"]
    store.close()

    def load() -> Any:
        return orjson.loads(decompressor.decompress(full_file.read_bytes()))

    def open_store() -> Any:
        return snapstore.SnapshotStore.open(folder / "store")

    worsts = {"worst": (0.0, 0), "worst_read": (0.0, 0)}
    step = max(1, len(ids) // SAMPLED_REBUILDS)
    for index in sorted(set(range(0, len(ids), step)) | set(range(max(0, len(ids) - 4), len(ids)))):
        load_ns = min(timed_ns(load)[0] for _ in range(3))
        for measure, found in ((cold_rebuild_ns, "worst"), (cold_read_ns, "worst_read")):
            spent = _best_of_three(measure, open_store, ids[index], digests[index], f"{shape}: snapshot {index + 1}")
            worsts[found] = max(worsts[found], (spent / load_ns, index + 1))
    file_median = statistics.median(files)
    return {
        "shape": shape,
        "turns": turns,
        "state_bytes": len(data),
        "commit_median": statistics.median(commits) / file_median,
        "commit_p99": sorted(commits)[int(0.99 * (len(commits) - 1))] / file_median,
        "file_median_ms": file_median / 1e6,
        "stored_bytes": stored,
        "naive_bytes": naive,
        "stored_ratio": stored / max(naive, 1),
        "worst_rebuild": worsts["worst"][0],
        "worst_rebuild_turn": worsts["worst"][1],
        "worst_read": worsts["worst_read"][0],
        "worst_read_turn": worsts["worst_read"][1],
    }


def _best_of_three(measure: Callable[..., tuple[int, Any]], open_store: Any, sid: str, expected: str, what: str) -> int:
    """The fastest of three timed reads of ``sid`` by ``measure``, each checked against ``expected``."""
    reads = [measure(open_store, "s", sid) for _attempt in range(3)]
    if digest(reads[-1][1]) != expected:
        raise RuntimeError(f"{what} rebuilt to another state")
    return min(spent for spent, _state in reads)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| shape | turns | last state | commit median / p99 vs a zstd-3 file | stored vs naive deltas"
        " | worst cold rebuild vs a full load | worst restarted read |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['turns']} | {r['state_bytes'] / 1024:,.0f} KiB | "
            f"{r['commit_median']:.2f}x / {r['commit_p99']:.2f}x (file {r['file_median_ms']:.2f} ms) | "
            f"{r['stored_ratio']:.2f}x ({r['stored_bytes'] / 1024:,.0f} / {r['naive_bytes'] / 1024:,.0f} KiB) | "
            f"{r['worst_rebuild']:.2f}x (turn {r['worst_rebuild_turn']}) | "
            f"{r['worst_read']:.2f}x (turn {r['worst_read_turn']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        parser.error(f"unknown shapes {unknown}; known: {', '.join(SHAPES)}")
    workdir = Path(tempfile.mkdtemp(prefix="snapstore-shapes-"))
    try:
        rows = []
        for shape in shapes:
            rows.append(run_shape(shape, args.turns, workdir))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = table(rows)
    print()
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "turn-shapes.md").write_text(text + "\n")
    (args.out / "turn-shapes.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
