"""``log --graph``: the tree of a session's snapshots, drawn as lanes.

A snapshot's parent is the head it was committed on, so a rollback followed by
a commit forks the history. The drawing walks the tree depth first: a fork
opens a lane to the right (``|\\``) for each branch that was left behind,
draws that branch whole, then continues the lane it came from with the branch
that leads to the head (or, without the head, to the newest snapshot). So no
two lanes ever cross, and a lane's ``|`` always leads to the snapshot's
parent. Oldest first the lanes open with ``\\``; newest first (``--reverse``)
the same picture is turned upside down and they close with ``/``, as in
``git log --graph``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Row = tuple[str, Any]  # (the graph's characters, the snapshot drawn there or None for a connecting row)


def graph_rows(snapshots: Sequence[Any], head: str | None, *, newest_first: bool = False) -> list[Row]:
    """Rows for ``snapshots`` (given oldest first, each with ``id`` and ``parent``); ``@`` marks the head."""
    order = {snap.id: index for index, snap in enumerate(snapshots)}
    children: dict[str, list[Any]] = {snap.id: [] for snap in snapshots}
    roots = []
    for snap in snapshots:
        if snap.parent in children:
            children[snap.parent].append(snap)
        else:  # the first snapshot, or one whose parent is no longer retained
            roots.append(snap)
    newest_below: dict[str, int] = {}
    for snap in reversed(snapshots):  # children come after their parent
        newest_below[snap.id] = max([order[snap.id]] + [newest_below.get(c.id, order[c.id]) for c in children[snap.id]])
    leads_to_head: set[str] = set()
    node = snapshots[order[head]] if head in order else None
    while node is not None:
        leads_to_head.add(node.id)
        node = snapshots[order[node.parent]] if node.parent in order else None

    def continuation(kids: list[Any]) -> Any:
        on_head = [kid for kid in kids if kid.id in leads_to_head]
        return on_head[0] if on_head else max(kids, key=lambda kid: newest_below[kid.id])

    rows: list[Row] = []

    def draw(snap: Any, depth: int) -> None:
        # the lane continues in a loop; only branches left behind recurse, one level per nested fork
        while True:
            rows.append(("| " * depth + ("@" if snap.id == head else "*"), snap))
            kids = children[snap.id]
            if not kids:
                return
            main = continuation(kids)
            for kid in sorted((k for k in kids if k is not main), key=lambda k: order[k.id]):
                rows.append(("| " * depth + "|\\", None))
                draw(kid, depth + 1)
            snap = main

    for root in roots:
        if rows:
            rows.append(("", None))  # another tree: its first snapshot's parent is not listed
        draw(root, 0)
    if newest_first:
        rows = [(text.replace("\\", "/"), snap) for text, snap in reversed(rows)]
    return rows
