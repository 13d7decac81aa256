"""What loading a LangGraph thread's settled head costs, part by part, and the forms we weighed.

Run from the repository root::

    python -m benchmarks.langgraph_head_forms --turns 200

Runs the benchmark's agent graph (``benchmarks.langgraph_agent``, tool results ``--tool-bytes``
long) for ``--turns`` turns with
``SnapstoreSaver`` on a directory store and closes it (which settles the head), then prints the
median of ``--rounds`` over the thread's checkpoints head, in milliseconds:

* loading it as the engine does: reading and decompressing its segment, parsing the state, and the
  hash check (serializing the state again; the first time, that turns each message's latin-1
  text into UTF-8); and hashing the stored bytes instead, the shortcut that was not kept (it takes
  bytes that hash to their record but are not the state's canonical JSON for the state);
* the messages as latin-1 text (stored) and as three ASCII forms weighed instead (base64, Python
  escapes, quoted-printable): the parse and hash check, turning the text back into bytes, and the
  zstd-3 size;
* the messages outside the state, a layout not built: the head with each message named by the
  hash of its bytes, and the messages' bytes in one zstd frame, each checked by hashing it;
* decoding the messages through ``serde`` one call each and in one call (as the saver does);
* the head's rows (``history``, ``snapshots``, ``writes_at``) as strings, as stored (format 3),
  against the same rows as arrays (format 2): parse, check, index the rows and decode the
  messages as one read, each form after a ``gc.collect()``, alternating, so the collector's work
  during the read counts;
* the state compressed alone at zstd levels 3, 1, -5 and -100: bytes, and time to decompress.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import xxhash
import zstandard

from benchmarks.langgraph_agent import add_tool_bytes_option, use_tool_result_bytes
from benchmarks.langgraph_bench import SERDE, THREAD, SnapstoreDirSubject
from benchmarks.langgraph_reads import run_graph
from snapstore import SnapshotStore, codec
from snapstore.history import SessionLog, check_state
from snapstore.langgraph.encoding import ValueCodec, serialized_bytes
from snapstore.langgraph.lanes import Index
from snapstore.langgraph.names import lane_names


def median_ms(action: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def alternate_ms(actions: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Each action timed ``rounds`` times, in turns (the order reversed every other round)."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for index in range(rounds):
        for name in list(actions)[:: 1 if index % 2 else -1]:
            gc.collect()
            start = time.perf_counter()
            actions[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(found) * 1000 for name, found in times.items()}


def load_parts(log: SessionLog, head: str, rounds: int) -> dict[str, float]:
    path = log.chain(head)
    assert len(path) == 1, "the head is not settled: a keyframe alone in its segment"
    commit = path[0]

    def read() -> bytes:
        return bytes(log.chain_payloads(commit.segment, commit.ordinal, [head])[head])

    payload = read()

    def check() -> None:
        state = codec.loads(payload)  # fresh strings: their UTF-8 is not cached yet
        check_state(state, commit.record.state, head, True)

    parse = median_ms(lambda: codec.loads(payload), rounds)
    return {
        "read and decompress its segment": median_ms(read, rounds),
        "parse the state": parse,
        "the hash check (serialize again)": median_ms(check, rounds) - parse,
        "hash the stored bytes instead (not kept)": median_ms(lambda: codec.object_id(payload), rounds),
    }


def _parse_and_check(data: bytes) -> str:
    return codec.object_id(codec.dumps_as_ordered(codec.loads(data)))


def _quoted_printable(data: bytes) -> str:
    """Quoted-printable text of ``data`` without its soft line breaks (``binascii.a2b_qp`` reads it back)."""
    return binascii.b2a_qp(data, quotetabs=False, istext=False, header=False).replace(b"=\n", b"").decode("ascii")


def text_forms(state: dict[str, Any], rounds: int) -> dict[str, float]:
    """The messages' msgpack bytes as the stored latin-1 text and as three ASCII forms: the head
    parsed and hash-checked, the messages' text turned back into bytes (joined into one call where
    the form allows, as the saver joins them), and the head's zstd-3 size."""
    messages = state["value:messages"][1:]
    raw = [serialized_bytes(m) for m in messages]
    encoders: dict[str, Callable[[bytes], str]] = {
        "latin-1": lambda b: b.decode("latin-1"),
        "base64": lambda b: base64.b64encode(b).decode("ascii"),
        "Python escapes": lambda b: b.decode("latin-1").encode("unicode_escape").decode("ascii"),
        "quoted-printable": _quoted_printable,
    }
    decoders: dict[str, Callable[[list[str]], Any]] = {
        "latin-1": lambda texts: "".join(texts).encode("latin-1"),
        "base64": lambda texts: [binascii.a2b_base64(t) for t in texts],  # padded: one call each
        "Python escapes": lambda texts: "".join(texts).encode("ascii").decode("unicode_escape").encode("latin-1"),
        "quoted-printable": lambda texts: binascii.a2b_qp("".join(texts).encode("ascii")),
    }
    out = {}
    for label, encode in encoders.items():
        form = dict(state)
        texts = [encode(b) for b in raw]
        form["value:messages"] = ["L"] + [[m[0], m[1], text] for m, text in zip(messages, texts, strict=True)]
        data = codec.dumps(form)
        decoded = decoders[label](texts)
        assert (b"".join(decoded) if isinstance(decoded, list) else decoded) == b"".join(raw)
        out[f"{label}: parse and hash check"] = median_ms(
            partial(_parse_and_check, data), rounds
        )
        out[f"{label}: text to bytes"] = median_ms(partial(decoders[label], texts), rounds)
        out[f"{label}: zstd-3 kB"] = len(zstandard.ZstdCompressor(level=3).compress(data)) / 1000
    return out


def outside_the_state(state: dict[str, Any], rounds: int) -> dict[str, float]:
    """What loading the head would cost were the messages' bytes stored outside the state (a
    layout not built): the head with each message named by the xxh3-128 of its bytes, parsed and
    hash-checked; the messages' bytes as one zstd-3 frame, decompressed, and each message checked
    against its name by hashing its bytes; beside the head as stored, decompressed, parsed and
    checked. One frame of all messages is the best case for their bytes stored."""
    messages = state["value:messages"][1:]
    raw = [serialized_bytes(m) for m in messages]
    names = [xxhash.xxh3_128_hexdigest(b) for b in raw]
    slim = dict(state)
    slim["value:messages"] = ["L"] + [["H", m[1], name] for m, name in zip(messages, names, strict=True)]
    whole, head = codec.dumps(state), codec.dumps(slim)
    packed_whole = zstandard.ZstdCompressor(level=3).compress(whole)
    packed_head = zstandard.ZstdCompressor(level=3).compress(head)
    pack = zstandard.ZstdCompressor(level=3).compress(b"".join(raw))
    lengths = [len(b) for b in raw]
    decompress = zstandard.ZstdDecompressor().decompress

    def check_messages() -> None:
        data, at = memoryview(decompress(pack)), 0
        for length, name in zip(lengths, names, strict=True):
            if xxhash.xxh3_128_hexdigest(data[at : at + length]) != name:
                raise AssertionError("a message does not hash to its name")
            at += length

    def load(packed: bytes) -> None:
        codec.object_id(codec.dumps_as_ordered(codec.loads(decompress(packed))))

    return {
        "as stored: decompress, parse and check the head": median_ms(lambda: load(packed_whole), rounds),
        "outside: the same, of the head without them": median_ms(lambda: load(packed_head), rounds),
        "outside: decompress the messages, hash each": median_ms(check_messages, rounds),
        "as stored: the head's zstd-3 kB": len(packed_whole) / 1000,
        "outside: the head's zstd-3 kB": len(packed_head) / 1000,
        "outside: the messages, one frame, zstd-3 kB": len(pack) / 1000,
    }


def decode_calls(state: dict[str, Any], rounds: int) -> dict[str, float]:
    messages = state["value:messages"][1:]
    values = ValueCodec(SERDE)

    def one_by_one() -> Any:
        return [values.decode(m) for m in messages]

    def at_once() -> Any:  # as the saver reads a message list
        return values.decode(state["value:messages"])

    assert at_once() == one_by_one()
    return alternate_ms({"serde, a call a message": one_by_one, "serde, one call": at_once}, rounds)


def rows_as_strings(state: dict[str, Any], rounds: int) -> dict[str, float]:
    """The stored head (format 3: rows as strings) against the same head with its rows as arrays
    (format 2), each parsed, checked, indexed and its messages decoded."""
    arrays = dict(state)
    del arrays["checkpoint_ids"]
    ids, rows = state["checkpoint_ids"], state["history"]
    arrays["history"] = [[cid, *orjson.loads(row)] for cid, row in zip(ids, rows, strict=True)]
    arrays["snapshots"] = [row.split(" ")[::-1] for row in state["snapshots"]]
    arrays["writes_at"] = [row.split(" ")[::-1] for row in state["writes_at"]]
    as_arrays, as_strings = codec.dumps(arrays), codec.dumps(state)
    values = ValueCodec(SERDE)

    def read(data: bytes) -> None:
        found = codec.loads(data)
        codec.object_id(codec.dumps_as_ordered(found))
        index = Index.of(found)
        index.snapshots.as_dict(), index.writes.as_dict(), index.metadata(index.latest())
        values.decode(found["value:messages"])

    forms = {"rows as arrays (format 2)": as_arrays, "rows as strings (stored, format 3)": as_strings}
    return alternate_ms({label: partial(read, data) for label, data in forms.items()}, rounds)


def zstd_levels(state: dict[str, Any], rounds: int) -> dict[str, float]:
    data = codec.dumps(state)
    decompress = zstandard.ZstdDecompressor().decompress
    out = {}
    for level in (3, 1, -5, -100):
        packed = zstandard.ZstdCompressor(level=level).compress(data)
        out[f"level {level}: kB"] = len(packed) / 1000
        out[f"level {level}: decompress"] = median_ms(partial(decompress, packed), rounds)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15, help="timings per figure (median)")
    add_tool_bytes_option(parser)
    args = parser.parse_args(argv)
    use_tool_result_bytes(args.tool_bytes)
    workdir = Path(tempfile.mkdtemp(prefix="lgforms-"))
    try:
        subject = SnapstoreDirSubject(workdir)
        run_graph(subject, args.turns)  # closing the saver settles the head
        with SnapshotStore.open(workdir / "checkpoints.snapstore") as store:
            session = store.session(lane_names(THREAD, "").checkpoints)
            head = session.head
            assert head is not None
            state = session.state(head.id)
            sections = {
                "loading the settled head": load_parts(session._current(), head.id, args.rounds),
                "the messages as text": text_forms(state, args.rounds),
                "the messages outside the state (not built)": outside_the_state(state, args.rounds),
                "decoding the messages": decode_calls(state, args.rounds),
                "a read of the head (parse, check, index, decode)": rows_as_strings(state, args.rounds),
                "the state compressed alone": zstd_levels(state, args.rounds),
            }
        print(
            f"{args.turns} turns, tool results of {args.tool_bytes} bytes, the checkpoints head "
            f"({head.size / 1000:.0f} kB of JSON), median of {args.rounds}"
        )
        for title, rows in sections.items():
            print(f"\n{title}")
            for label, value in rows.items():
                unit = "" if label.endswith("kB") else " ms"
                print(f"  {label:<48} {value:9.2f}{unit}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
