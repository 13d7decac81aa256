"""What a new user meets in the first hour of the command line, each run as the real ``snapstore``
command in a subprocess (cli_support.py): evicted ids explained by every command, the command
line's own words in errors, ``SESSION:TAG``, refused JSON input named by its place, and export
counting what its archive holds."""

from __future__ import annotations

from pathlib import Path

import orjson

from cli_support import ok, one_error_line, run
from snapstore.cli.base import speak_flags


def commits(store: Path, count: int, *, limit: int, session: str = "s") -> list[str]:
    ok("init", store=store)  # says so and changes nothing when the store exists
    return [
        ok("commit", session, "-", "--turn", str(n), "--max-snapshots", str(limit), store=store,
           stdin=b'{"turn": %d, "hp": %d}' % (n, 10 - n)).strip()
        for n in range(count)
    ]


def refused(*args: str, store: Path, stdin: bytes | None = None) -> str:
    proc = run(*args, store=store, stdin=stdin)
    assert proc.returncode == 1 and proc.stdout == "", (args, proc.stdout, proc.stderr)
    return one_error_line(proc.stderr)


def test_store_wide_commands_explain_an_evicted_id_in_the_command_lines_words(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = commits(store, 5, limit=3)
    for args in (("show", ids[0][:8]), ("diff", ids[0][:8], ids[4]), ("restore", ids[0]),
                 ("export", str(tmp_path / "a.snaparchive"), "--snapshot", ids[0][:8]),
                 ("rollback", "s", ids[0][:8]), ("tag", "s", ids[1][:10], "keep")):
        line = refused(*args, store=store)
        wanted = args[2] if args[0] in ("rollback", "tag") else args[-1] if args[0] == "export" else args[1]
        assert f"snapshot {wanted} is no longer retained in session 's': evicted by retention" in line
        assert "the session keeps its last 3 snapshots and its tagged ones" in line
        assert "--max-snapshots N" in line and "snapstore tag" in line, line
        assert "set_max_snapshots" not in line
    assert not (tmp_path / "a.snaparchive").exists()

    # an id no session knows: where retention has evicted, the error says an old id is no longer known
    never = refused("show", "0123456789abcdef", store=store)
    assert never.endswith(
        "snapshot 0123456789abcdef not found in the store: no session retains it (session 's' keeps its last 3 "
        "snapshots, and its tagged ones; an id evicted long ago is no longer known)"
    )
    # in a store that never evicted anything, such an id never existed: nothing more to say
    fresh = tmp_path / "fresh"
    commits(fresh, 2, limit=10)
    assert refused("show", "0123456789abcdef", store=fresh) == (
        "snapstore: error: snapshot 0123456789abcdef not found in the store"
    )


def test_library_methods_are_spelled_as_flags() -> None:
    library = "session 's' holds 5 untagged snapshots: a limit of 3 would evict 2; call set_max_snapshots(3) to do that"
    assert speak_flags(library).endswith("would evict 2; commit with --max-snapshots 3 --force to do that")
    assert speak_flags("raise it with set_max_snapshots") == "raise it with --max-snapshots"
    upgrade = (
        "has format version 1; this build reads versions 2 to 4: run `snapstore --store x upgrade` "
        "(or SnapshotStore.upgrade(path))"
    )
    assert speak_flags(upgrade).endswith("run `snapstore --store x upgrade`")


def test_a_head_that_retention_no_longer_lists_is_shown_exported_and_imported_whole(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = commits(store, 3, limit=3)
    ok("rollback", "s", ids[0], store=store)
    ok("forget", "s", "--keep-last", "1", "--yes", store=store)
    listed = [entry["id"] for entry in orjson.loads(ok("log", "s", "--json", store=store))]
    sessions = orjson.loads(ok("sessions", "--json", store=store))
    assert listed == [ids[2]] and sessions[0]["head"] == ids[0]  # the head is no longer listed

    shown = orjson.loads(ok("show", ids[0][:8], "--json", store=store))  # but still read, by any command
    assert (shown["id"], shown["session"]) == (ids[0], "s")
    assert orjson.dumps(shown["value"], option=orjson.OPT_SORT_KEYS) == b'{"hp":10,"turn":0}'

    archive = tmp_path / "s.snaparchive"
    exported = orjson.loads(ok("export", str(archive), "--json", store=store))
    assert exported["snapshots"] == 2  # the listed one and the head: what the archive carries
    assert ok("export", str(tmp_path / "again.snaparchive"), store=store).startswith(
        "exported 1 session (s), 2 snapshots,"
    )
    imported = orjson.loads(ok("import", str(archive), "--json", store=tmp_path / "other"))
    assert imported["snapshots_written"] == exported["snapshots"]
    other = orjson.loads(ok("sessions", "--json", store=tmp_path / "other"))
    assert other[0]["head"] == ids[0] and other[0]["snapshots"] == 1  # as the source lists it


def test_session_colon_tag_names_a_tagged_snapshot_from_any_command(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = commits(store, 3, limit=10)
    other = commits(store, 2, limit=10, session="game:2")  # a session name may hold a colon
    ok("tag", "s", ids[0], "start", store=store)
    ok("tag", "s", ids[2], "boss", store=store)
    ok("tag", "game:2", other[1], "boss", store=store)

    assert ok("show", "s:start", "--compact", store=store) == '{"hp":10,"turn":0}\n'
    assert ok("show", "s:start:/hp", store=store) == "10\n"
    assert ok("show", "game:2:boss:/turn", store=store) == "1\n"
    assert ok("restore", "s:boss", store=store) == '{"hp":8,"turn":2}\n'
    assert orjson.loads(ok("diff", "s:start", "s:boss", "--json", store=store)) == [
        {"op": "replace", "path": "/hp", "value": 8},
        {"op": "replace", "path": "/turn", "value": 2},
    ]
    assert ok("show", "start", "--compact", store=store) == '{"hp":10,"turn":0}\n'  # only one session has it
    exported = orjson.loads(ok("export", str(tmp_path / "a.snaparchive"), "--snapshot", "s:start", "--json",
                               store=store))
    assert exported["sessions"] == ["s"] and exported["snapshots"] == 1

    # the commands of one session take its SESSION:TAG too, and refuse another session's
    assert f"head is now {ids[0][:12]}" in ok("rollback", "s", "s:start", store=store)
    assert ok("tag", "s", "s:boss", "last", store=store).startswith(f"s: tagged {ids[2][:12]} as last")
    assert refused("rollback", "s", "game:2:boss", store=store).endswith(
        "game:2:boss names a snapshot of session 'game:2', not of 's'"
    )

    assert refused("show", "boss", store=store).endswith(
        "tag 'boss' is in several sessions; name one as SESSION:TAG: game:2:boss, s:boss"
    )
    assert refused("show", "s:nope", store=store).endswith(
        "session 's' has no tag 'nope' (its tags: boss, last, start; a part of its state is s:/nope, "
        "a JSON pointer after the colon)"
    )
    assert refused("diff", "x:start", store=store).endswith(
        "snapshot 'x:start' not found: SESSION:TAG names a session, and 'x' is none (sessions: game:2, s)"
    )
    assert "a tagged snapshot is named SESSION:TAG" in refused("restore", "nothing-here", store=store)


def test_json_input_refusals_name_the_place_and_write_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ok("init", store=store)
    path = tmp_path / "state.json"
    cases = {
        b'{"party": {"hp": [1, 1180591620717411303424]}}':
            f"{path} at /party/hp/1: integer 1180591620717411303424 is outside the 64-bit range a state may hold",
        b'{"a/b": {"~": -9223372036854775809}}':
            f"{path} at /a~1b/~0: integer -9223372036854775809 is outside the 64-bit range a state may hold",
        b'{"a": 1, "a": 2}':
            f"{path}: key 'a' appears more than once in the top-level object; a state's keys are unique, so the "
            "input is refused rather than one value kept",
        b'{"log": [{"who": "Zo\\u00eb"}, {"hp": 1, "mp": 2, "hp": 1}]}':
            f"{path} at /log/1: key 'hp' appears more than once in this object;",
    }
    for data, message in cases.items():
        path.write_bytes(data)
        assert message in refused("commit", "s", str(path), store=store), data
    assert refused("commit", "s", "-", store=store, stdin=b'[{"k": 1, "k": 1}]').startswith(
        "snapstore: error: standard input at /0: key 'k' appears more than once"
    )
    assert orjson.loads(ok("sessions", "--json", store=store)) == []  # nothing was written

    # the check reads as deep as orjson does: a deep document reaches the library, which says what it refuses
    deep = b'{"a": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert "nested too deeply" in refused("commit", "s", "-", store=store, stdin=deep)
    fine = b'{"a": 18446744073709551615, "b": -9223372036854775808, "c": {"d": 1, "e": {"d": 2}}}'
    sid = ok("commit", "s", "-", store=store, stdin=fine).strip()
    assert ok("show", sid, "--compact", store=store).encode() == fine.replace(b" ", b"") + b"\n"


def test_an_id_lost_with_a_damaged_segment_is_named_as_such_by_every_command(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = commits(store, 3, limit=10)
    (segment,) = (store / "sessions").rglob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # past the first snapshot: the later ones can no longer be read
    segment.write_bytes(bytes(data))

    for args in (("show", ids[2][:8]), ("diff", ids[0], ids[2][:8]), ("restore", ids[2][:8]),
                 ("rollback", "s", ids[2][:8]), ("tag", "s", ids[2][:8], "keep")):
        line = refused(*args, store=store)
        assert f"snapshot {ids[2][:8]} not found in session 's', whose segment " in line, line
        assert "is damaged and may have held it" in line, line
    assert ok("show", ids[0][:8], "--compact", store=store) == '{"hp":10,"turn":0}\n'
