"""LangGraph checkpointers side by side: SnapstoreSaver against LangGraph's own savers.

Run from the repository root (needs ``pip install -e '.[test,bench]'``)::

    python -m benchmarks.langgraph_bench --turns 50 200 1000

Set ``SNAPSTORE_BENCH_POSTGRES_URL=postgresql://...`` to add ``PostgresSaver`` (and
``SnapstoreSaver`` on a PostgreSQL store) on that server; each gets a schema of its own,
dropped afterwards.

For each turn count, every saver runs the same deterministic agent graph
(``benchmarks.langgraph_agent``) on one thread, ``durability="sync"``, in a fresh store. The
savers run side by side: each turn is run by every saver in turn, the order rotated from one turn
to the next (and so is each round of reads), so that the machine's slow spells fall on all of
them alike. Reported:

* bytes stored, once the savers are closed (so what closing writes counts: SnapstoreSaver settles
  the heads it wrote): the database file, the store's directory, or the schema's tables and
  indexes (``pg_total_relation_size``); for ``InMemorySaver`` the serialized bytes it holds;
* time per step: time spent inside ``put`` and ``put_writes`` over the run, per checkpoint;
* reading the latest checkpoint, and the one 200 checkpoints back, as the graph does
  (``graph.get_state(config)``: the saver's ``get_tuple``, then the channels; a ``DeltaChannel``
  replays its writes there), median of ``--reads``, each after a ``gc.collect()`` (the garbage
  of what ran before is not that read's to collect): on a freshly opened saver and store (no
  cache of the run helps), and on the saver that ran the graph (a long-lived server's case).

Every saver's latest checkpoint must hold the same messages as ``InMemorySaver``'s, and every
read must give the same messages after reopening as before, or the run stops.

``--tool-bytes N`` runs a thread of another shape: each tool result N bytes instead of 3,000
(fewer, larger messages for the same state), its files named ``langgraph-<turns>-tool<N>``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from benchmarks.langgraph_agent import (
    DELTA_STATE,
    TOOL_RESULT_BYTES,
    AgentState,
    add_tool_bytes_option,
    build_graph,
    use_tool_result_bytes,
    user_message,
)
from snapstore.langgraph import SnapstoreSaver

RESULTS = Path(__file__).parent / "results"
POSTGRES_ENV = "SNAPSTORE_BENCH_POSTGRES_URL"
BACK = 200
THREAD = "bench-thread"
SERDE = JsonPlusSerializer()
STORE_SETTINGS: dict[str, Any] = json.loads(os.environ.get("LGBENCH_STORE_SETTINGS", "{}"))


@dataclass
class Result:
    saver: str
    turns: int
    checkpoints: int
    bytes_stored: int
    step_ms: float
    put_ms: float
    put_writes_ms: float
    latest_ms: float
    back_ms: float | None
    latest_warm_ms: float
    back_warm_ms: float | None
    run_s: float


class Timed:
    """Wraps a saver's put and put_writes to add up the time spent inside them."""

    def __init__(self, saver: BaseCheckpointSaver) -> None:
        self.saver = saver
        self.put_s = self.writes_s = 0.0
        self.ids: list[str] = []
        put, put_writes = saver.put, saver.put_writes

        def timed_put(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            config = put(*args, **kwargs)
            self.put_s += time.perf_counter() - start
            self.ids.append(config["configurable"]["checkpoint_id"])
            return config

        def timed_put_writes(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            put_writes(*args, **kwargs)
            self.writes_s += time.perf_counter() - start

        saver.put = timed_put  # type: ignore[method-assign]
        saver.put_writes = timed_put_writes  # type: ignore[method-assign]


# -- the savers: each opens a fresh store, reopens it for reads, and measures it ---------------
class Subject:
    name = ""
    delta_channel = False
    #: run only up to --server-max-turns / --memory-max-turns (a full copy of the messages per
    #: checkpoint in RAM needs gigabytes at 1,000 turns; a shared database server, hours)
    limit = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    @contextlib.contextmanager
    def open(self) -> Iterator[BaseCheckpointSaver]:
        raise NotImplementedError
        yield

    def bytes_stored(self, saver: BaseCheckpointSaver) -> int:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass


class SqliteSubject(Subject):
    name = "SqliteSaver"

    @contextlib.contextmanager
    def open(self) -> Iterator[BaseCheckpointSaver]:
        with SqliteSaver.from_conn_string(str(self.workdir / "checkpoints.sqlite")) as saver:
            yield saver

    def bytes_stored(self, saver: BaseCheckpointSaver) -> int:
        return sum(p.stat().st_size for p in self.workdir.glob("checkpoints.sqlite*"))


class SqliteDeltaSubject(SqliteSubject):
    name = "SqliteSaver + DeltaChannel"
    delta_channel = True


class MemorySubject(Subject):
    name = "InMemorySaver"
    limit = "memory"
    saver: InMemorySaver | None = None

    @contextlib.contextmanager
    def open(self) -> Iterator[BaseCheckpointSaver]:
        if self.saver is None:
            self.saver = InMemorySaver()
        yield self.saver

    def bytes_stored(self, saver: BaseCheckpointSaver) -> int:
        assert isinstance(saver, InMemorySaver)
        total = 0
        for namespaces in saver.storage.values():
            for checkpoints in namespaces.values():
                for checkpoint, metadata, _parent in checkpoints.values():
                    total += len(checkpoint[1]) + len(metadata[1])
        total += sum(len(blob[1]) for blob in saver.blobs.values())
        total += sum(len(w[2][1]) for writes in saver.writes.values() for w in writes.values())
        return total


class SnapstoreDirSubject(Subject):
    name = "SnapstoreSaver (directory)"

    @contextlib.contextmanager
    def open(self) -> Iterator[BaseCheckpointSaver]:
        with SnapstoreSaver.from_path(self.workdir / "checkpoints.snapstore", **STORE_SETTINGS) as saver:
            yield saver

    def bytes_stored(self, saver: BaseCheckpointSaver) -> int:
        root = self.workdir / "checkpoints.snapstore"
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class PostgresSchema:
    """A schema of its own on the benchmark server, so its tables can be measured and dropped."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self.schema = f"lgbench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}")
        separator = "&" if "?" in url else "?"
        self.scoped_url = f"{url}{separator}options=-csearch_path%3D{self.schema}"

    def bytes_stored(self) -> int:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (self.schema,),
            ).fetchone()
        return int(row[0]) if row else 0

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.schema} CASCADE")


class PostgresSubject(Subject):
    name = "PostgresSaver"
    limit = "server"

    def __init__(self, workdir: Path, url: str) -> None:
        super().__init__(workdir)
        self.pg = PostgresSchema(url)
        self.ready = False

    @contextlib.contextmanager
    def open(self) -> Iterator[BaseCheckpointSaver]:
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(self.pg.scoped_url) as saver:
            if not self.ready:
                saver.setup()
                self.ready = True
            yield saver

    def bytes_stored(self, saver: BaseCheckpointSaver) -> int:
        return self.pg.bytes_stored()

    def cleanup(self) -> None:
        self.pg.drop()


class SnapstorePostgresSubject(PostgresSubject):
    name = "SnapstoreSaver (PostgreSQL)"

    @contextlib.contextmanager
    def open(self) -> Iterator[BaseCheckpointSaver]:
        with SnapstoreSaver.from_conn_string(self.pg.scoped_url) as saver:
            yield saver


# -- one run ---------------------------------------------------------------------------------
def messages_of(values: Any) -> bytes:
    return SERDE.dumps_typed(values.get("messages"))[1]


@dataclass
class Running:
    """One saver of a run: its graph, its open saver, what it put, and its figures."""

    subject: Subject
    graph: Any
    saver: BaseCheckpointSaver
    app: Any
    timed: Timed
    run_s: float = 0.0
    stored: int = 0
    back_id: str | None = None
    reads: dict[str, list[float]] = field(default_factory=dict)
    messages: dict[str, bytes] = field(default_factory=dict)

    def config(self, which: str) -> Any:
        configurable: dict[str, Any] = {"thread_id": THREAD}
        if which.startswith("back"):
            configurable["checkpoint_id"] = self.back_id
        return {"configurable": configurable}

    @contextlib.contextmanager
    def fresh_app(self) -> Iterator[Any]:
        with self.subject.open() as saver:
            yield self.graph.compile(checkpointer=saver)


def rotated(running: list[Running], by: int) -> list[Running]:
    """The savers in a rotated order, so no saver always runs first (or last) in a round."""
    shift = by % len(running) if running else 0
    return running[shift:] + running[:shift]


def timed_read(run: Running, app: Any, which: str) -> None:
    """One ``get_state`` (the checkpoint as the graph sees it), in milliseconds, and its messages."""
    gc.collect()  # the garbage of what ran before is not this read's to collect
    start = time.perf_counter()
    values = app.get_state(run.config(which)).values
    run.reads.setdefault(which, []).append((time.perf_counter() - start) * 1000)
    messages = messages_of(values)
    if run.messages.setdefault(which, messages) != messages:
        raise SystemExit(f"{run.subject.name}: reading the {which.split(',')[0]} checkpoint gave different messages")


def run_interleaved(subjects: list[Subject], turns: int, reads: int) -> list[Result]:
    """Run the graph with every saver at once, turn by turn, and read each saver's checkpoints.

    Each turn (and each round of reads) goes to every saver in turn, the order rotated from one to
    the next, so that the machine's slow spells fall on all of them alike.
    """
    with contextlib.ExitStack() as stack:
        running = []
        for subject in subjects:
            graph = build_graph(DELTA_STATE if subject.delta_channel and DELTA_STATE else AgentState)
            saver = stack.enter_context(subject.open())
            running.append(Running(subject, graph, saver, graph.compile(checkpointer=saver), Timed(saver)))
        for turn in range(turns):
            for run in rotated(running, turn):
                start = time.perf_counter()
                run.app.invoke({"messages": [user_message(turn)]}, run.config("latest"), durability="sync")
                run.run_s += time.perf_counter() - start
        for run in running:
            run.back_id = run.timed.ids[-1 - BACK] if len(run.timed.ids) > BACK else None
        for which in ("latest, same saver", "back, same saver"):
            for i in range(reads):
                for run in rotated(running, i):
                    if which.startswith("latest") or run.back_id is not None:
                        timed_read(run, run.app, which)
    for run in running:  # once the savers closed: what closing writes (a settled head) counts too
        run.stored = run.subject.bytes_stored(run.saver)
    for which in ("latest, reopened", "back, reopened"):
        for i in range(reads):
            for run in rotated(running, i):
                if which.startswith("latest") or run.back_id is not None:
                    with run.fresh_app() as app:
                        timed_read(run, app, which)
    expected = next((r.messages["latest, same saver"] for r in running if r.subject.name == "InMemorySaver"), None)
    return [result_of(run, turns, expected) for run in running]


def result_of(run: Running, turns: int, expected_latest: bytes | None) -> Result:
    """A saver's figures, once its reads are checked against each other and InMemorySaver's."""
    seen = run.messages
    for which in ("latest", "back"):
        if f"{which}, reopened" in seen and seen[f"{which}, reopened"] != seen[f"{which}, same saver"]:
            raise SystemExit(f"{run.subject.name}: the {which} checkpoint reads differently after reopening")
    if expected_latest is not None and seen["latest, same saver"] != expected_latest:
        raise SystemExit(f"{run.subject.name}: the latest checkpoint's messages differ from InMemorySaver's")
    steps = len(run.timed.ids)
    median = {which: statistics.median(times) for which, times in run.reads.items()}
    return Result(
        saver=run.subject.name,
        turns=turns,
        checkpoints=steps,
        bytes_stored=run.stored,
        step_ms=(run.timed.put_s + run.timed.writes_s) / steps * 1000,
        put_ms=run.timed.put_s / steps * 1000,
        put_writes_ms=run.timed.writes_s / steps * 1000,
        latest_ms=median["latest, reopened"],
        back_ms=median.get("back, reopened"),
        latest_warm_ms=median["latest, same saver"],
        back_warm_ms=median.get("back, same saver"),
        run_s=run.run_s,
    )


def subjects_for(workdir: Path) -> list[Callable[[Path], Subject]]:
    makers: list[Callable[[Path], Subject]] = [MemorySubject, SqliteSubject]
    if DELTA_STATE is not None:
        makers.append(SqliteDeltaSubject)
    url = os.environ.get(POSTGRES_ENV)
    if url:
        makers.append(lambda d: PostgresSubject(d, url))
    makers.append(SnapstoreDirSubject)
    if url:
        makers.append(lambda d: SnapstorePostgresSubject(d, url))
    return makers


# -- report ----------------------------------------------------------------------------------
def human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def markdown(results: list[Result]) -> str:
    lines = [
        "| turns | saver | checkpoints | bytes stored | vs SqliteSaver | time per step (put + put_writes) "
        "| read latest: reopened / same saver | read 200 back: reopened / same saver |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for turns in sorted({r.turns for r in results}):
        rows = [r for r in results if r.turns == turns]
        sqlite = next((r for r in rows if r.saver == "SqliteSaver"), None)
        for r in rows:
            ratio = f"{sqlite.bytes_stored / r.bytes_stored:.1f}x smaller" if sqlite and r is not sqlite else ""
            back = f"{r.back_ms:.1f} / {r.back_warm_ms:.1f} ms" if r.back_ms is not None and r.back_warm_ms else "n/a"
            lines.append(
                f"| {turns} | {r.saver} | {r.checkpoints} | {human_bytes(r.bytes_stored)} | {ratio} "
                f"| {r.step_ms:.2f} ms ({r.put_ms:.2f} + {r.put_writes_ms:.2f}) "
                f"| {r.latest_ms:.1f} / {r.latest_warm_ms:.1f} ms | {back} |"
            )
    return "\n".join(lines)


def chart(results: list[Result], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.8))
    for name in dict.fromkeys(r.saver for r in results):
        rows = sorted((r for r in results if r.saver == name), key=lambda r: r.turns)
        turns = [r.turns for r in rows]
        left.plot(turns, [r.bytes_stored / 1e6 for r in rows], marker="o", label=name)
        middle.plot(turns, [r.bytes_stored / r.turns / 1e3 for r in rows], marker="o", label=name)
        right.plot(turns, [r.step_ms for r in rows], marker="o", label=name)
    log_log = {"xscale": "log", "yscale": "log", "xlabel": "turns (log)"}
    left.set(title="Bytes stored by one thread", ylabel="MB (log)", **log_log)
    middle.set(title="Bytes per turn (flat = linear growth)", ylabel="kB (log)", **log_log)
    right.set(title="Time per step (put + put_writes)", ylabel="ms (log)", **log_log)
    left.legend(fontsize=8)
    for axes in (left, middle, right):
        axes.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def cpu_breakdown(turns: int, workdir: Path) -> dict[str, float]:
    """CPU milliseconds per step (the calling thread's, so other processes do not count) spent in
    put and put_writes by SqliteSaver and SnapstoreSaver, and inside SnapstoreSaver's: encoding
    values through serde (of which comparing the kept models' states), and snapstore's commits (of
    which compressing deltas and keyframes)."""
    from snapstore import entries, session
    from snapstore.langgraph import encoding, lanes, saver

    spent: dict[str, float] = {}
    originals = []
    counted_keys: list[tuple[Any, str, str]] = []

    def count(owner: Any, method: str, key: str) -> None:
        original = getattr(owner, method)
        originals.append((owner, method, original))
        counted_keys.append((owner, method, key))

        def counted(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent[key] = spent.get(key, 0.0) + time.thread_time() - start

        setattr(owner, method, counted)

    count(SqliteSaver, "put", "SqliteSaver put")
    count(SqliteSaver, "put_writes", "SqliteSaver put_writes")
    count(saver.SnapstoreSaver, "put", "SnapstoreSaver put")
    count(saver.SnapstoreSaver, "put_writes", "SnapstoreSaver put_writes")
    count(saver.SnapstoreSaver, "_encode_values", "  of which encoding channel values (serde)")
    count(encoding.Reuse, "take", "    of which comparing kept models (pickle)")
    count(lanes.Lane, "_commit", "  of which snapstore commits (both sessions)")
    count(entries.DeltaStream, "compress", "    of which compressing deltas (zstd)")
    count(session, "compress_keyframe", "    of which compressing keyframes (zstd)")
    try:
        for subject in (SqliteSubject(workdir), SnapstoreDirSubject(workdir)):
            with subject.open() as opened:
                app = build_graph(AgentState).compile(checkpointer=opened)
                for turn in range(turns):
                    app.invoke({"messages": [user_message(turn)]}, {"configurable": {"thread_id": THREAD}})
    finally:
        for owner, method, original in originals:
            setattr(owner, method, original)
    steps = turns * 5
    order = [key for _owner, _method, key in counted_keys]
    return {key: spent.get(key, 0.0) / steps * 1000 for key in order}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--reads", type=int, default=5, help="fresh-saver reads per figure (median)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--savers", help="comma-separated substrings of saver names to run (default: all)")
    parser.add_argument(
        "--memory-max-turns",
        type=int,
        default=200,
        help="InMemorySaver holds a full copy of the messages per checkpoint in RAM: skip it above this",
    )
    parser.add_argument(
        "--server-max-turns",
        type=int,
        default=200,
        help=f"the savers on the {POSTGRES_ENV} server: skip them above this",
    )
    add_tool_bytes_option(parser)  # another size writes files named -tool<bytes>
    parser.add_argument("--replot", type=Path, help="redraw the table and chart of a results .json, run nothing")
    parser.add_argument(
        "--cpu-breakdown", action="store_true", help="CPU time per step inside the savers at each --turns, nothing else"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    shape = "" if args.tool_bytes == TOOL_RESULT_BYTES else f"-tool{args.tool_bytes}"
    use_tool_result_bytes(args.tool_bytes)
    if args.cpu_breakdown:
        for turns in args.turns:
            workdir = Path(tempfile.mkdtemp(prefix="lgbench-"))
            try:
                for key, ms in cpu_breakdown(turns, workdir).items():
                    print(f"{turns:>5} turns  {key:<45} {ms:7.2f} ms CPU per step")
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        return
    if args.replot:
        saved = [Result(**row) for row in json.loads(args.replot.read_text())]
        drawn = chart(saved, args.replot.with_suffix(".png"))
        print(markdown(saved) + ("\n\nwrote " + str(args.replot.with_suffix(".png")) if drawn else ""))
        return
    results: list[Result] = []
    for turns in args.turns:
        subjects: list[Subject] = []
        try:
            for make in subjects_for(args.out):
                subject = make(Path(tempfile.mkdtemp(prefix="lgbench-")))
                cap = {"memory": args.memory_max_turns, "server": args.server_max_turns}.get(subject.limit)
                wanted = not args.savers or any(s.strip() in subject.name for s in args.savers.split(","))
                if wanted and (cap is None or turns <= cap):
                    subjects.append(subject)
                    continue
                if wanted:
                    print(f"{turns:>5} turns  {subject.name:<28} skipped (above --{subject.limit}-max-turns)")
                subject.cleanup()
                shutil.rmtree(subject.workdir, ignore_errors=True)
            for result in run_interleaved(subjects, turns, args.reads):
                results.append(result)
                print(
                    f"{turns:>5} turns  {result.saver:<28} {human_bytes(result.bytes_stored):>10}  "
                    f"step {result.step_ms:7.2f} ms  latest {result.latest_ms:7.2f} / {result.latest_warm_ms:7.2f} ms  "
                    f"back {result.back_ms or 0:7.2f} / {result.back_warm_ms or 0:7.2f} ms  ({result.run_s:.0f} s)",
                    flush=True,
                )
        finally:
            for subject in subjects:
                subject.cleanup()
                shutil.rmtree(subject.workdir, ignore_errors=True)
    stem = "langgraph-" + "-".join(str(t) for t in args.turns) + shape
    table = markdown(results)
    option = f" --tool-bytes {args.tool_bytes}" if shape else ""
    option += f" --reads {args.reads}" if args.reads != 5 else ""
    option += f' --savers "{args.savers}"' if args.savers else ""
    header = (
        f"# LangGraph checkpointers, {', '.join(map(str, args.turns))} turns\n\n"
        f"`python -m benchmarks.langgraph_bench --turns {' '.join(map(str, args.turns))}{option}` on "
        f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores.\n\n"
    )
    (args.out / f"{stem}.md").write_text(header + table + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    drawn = chart(results, args.out / f"{stem}.png")
    print()
    print(table)
    print(f"\nwrote {args.out / (stem + '.md')}" + (f" and {stem}.png" if drawn else ""))


if __name__ == "__main__":
    main()
