"""Deterministic synthetic workload: an AI game-master RPG session.

``generate(turns, seed=...)`` plays a session like a real game loop would: one
state dict is created once and *mutated in place* every turn, and the same
object is yielded after each turn. Whoever consumes it must snapshot it (copy,
serialise, diff...) before asking for the next turn.

Every turn appends transcript messages (a player message, the GM narration and
sometimes a tool message, ~1.2 KB of JSON per turn) and changes the world:

* characters: hp (int), xp (float), conditions added/removed, gold, stats;
* inventories: items inserted at random positions, removed, reordered, qty;
* NPCs: attitude changes, location moves, notes, new NPCs appearing;
* quests: status changes, objectives ticked, new quests;
* combat: starts/ends, initiative order rotated, reordered, reset to [];
* flags: bools toggled, counters incremented, one value cycling 1 / 1.0 / true;
* keys with '/', '~', digits and non-ASCII text ("Zoë's tavern", "gate/north",
  "~cursed~", "42"), which exercise JSON Pointer escaping.

At 1,000 turns the state is ~1.2 MB of compact JSON (``orjson.dumps``).

``generate_fixed(base_bytes, turns, seed=...)`` is the "fixed change, growing
state" mode: it first plays ordinary turns until the state reaches
``base_bytes`` of JSON, then applies *the same small change* every turn
(`fixed_change`), so commit cost can be plotted against state size.

Everything is driven by one ``random.Random(seed)``; no wall clock, no set
iteration order, so the same (turns, seed) always yields identical states.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson

__all__ = [
    "DEFAULT_SEED",
    "RpgSession",
    "generate",
    "generate_fixed",
    "grow_to",
    "grown_states",
    "fixed_change",
    "state_size",
]

DEFAULT_SEED = 20240611

# --------------------------------------------------------------------------
# vocabulary (hand-written for this benchmark)

_WORDS = """
the a an of to and in on at with from under over beyond through across behind
beneath toward against between while as when where though until before after
ancient broken silver crimson hollow quiet restless frozen burning gilded rotten
narrow towering crooked damp smoky bitter sweet distant faint heavy sharp worn
forgotten hidden sacred cursed wary eager weary grim cheerful cunning loyal
stone door torch lantern blade shield cloak ring scroll potion coin map key
rope ladder bridge river forest marsh cavern tower keep gate wall road path
tavern market temple shrine crypt altar throne banner chain cage well mill
dragon goblin troll wraith wolf raven serpent spider golem knight priest witch
merchant guard captain smith bard thief hunter sailor farmer child elder
shadow light fire ice wind rain fog dusk dawn night moon star storm thunder
blood bone ash dust salt iron gold glass wine bread ale smoke silence song
whisper shout laugh sigh growl echo footstep heartbeat breath murmur creak
draws raises lowers opens closes climbs crosses searches finds loses grabs
throws catches swings strikes parries dodges casts chants prays bargains lies
laughs frowns nods waits listens watches follows leads hides sneaks runs
rests drinks eats sleeps wakes remembers forgets promises warns threatens
slowly quickly carefully suddenly quietly loudly barely nearly almost finally
again still only even perhaps surely clearly strangely oddly grimly
north south east west left right above below inside outside nearby far
one two three four five dozen hundred first second last next
your you his her their its our my we they he she it them us
""".split()  # noqa: SIM905 - a word list reads better as a block

_NAMES = [
    "Zoë", "Björn", "Aurélie", "Şahin", "Małgorzata", "Kōji", "Ægir", "Ñusta",
    "Dmitri", "Isolde", "Tomasz", "Renée", "Garrick", "Lysandra", "Oona", "Pell",
]
_PLACES = [
    "Zoë's tavern", "gate/north", "gate/south", "the ~cursed~ crypt",
    "Ravensmoor", "Île des Brumes", "Kraków road", "the 42nd milestone",
    "Old Mill", "Saltmarsh docks", "Þórr's forge", "Sunken Library",
]
_CONDITIONS = [
    "poisoned", "blessed", "prone", "frightened", "invisible", "exhausted",
    "charmed", "hasted", "bleeding", "~cursed~",
]
_ITEM_NAMES = [
    "Longsword", "Healing Potion", "Rope (50 ft)", "Torch", "Lockpicks",
    "Silver Dagger", "Map of Ravensmoor", "Rations", "Holy Symbol",
    "Scroll of Fireball", "Ring of Warmth", "Bag of Marbles", "Lantern",
    "Crowbar", "Zoë's letter", "Key/North Gate", "Whetstone", "Bedroll",
    "Spell Component Pouch", "Amulet ~cursed~", "Gem (42 gp)", "Chalk",
]
_ATTITUDES = ["hostile", "wary", "neutral", "friendly", "devoted"]
_QUEST_STATUS = ["open", "active", "completed", "failed", "abandoned"]
_TOOLS = ["roll_dice", "lookup_rule", "update_map", "spawn_npc", "give_item"]
_DICE = ["1d20", "2d6", "1d8", "1d12", "3d6", "1d100", "4d4"]
_ROLES_SPOKEN = ["user", "gm"]

_MINUTES_PER_TURN = 7


def state_size(state: dict[str, Any]) -> int:
    """Bytes of the state as compact JSON (orjson)."""
    return len(orjson.dumps(state))


class RpgSession:
    """One game session; ``play_turn`` mutates ``self.state`` in place."""

    def __init__(self, seed: int = DEFAULT_SEED) -> None:
        self.rng = random.Random(seed)
        self.turn = 0
        self._next_item = 1
        self._next_npc = 1
        self._next_quest = 1
        self.state: dict[str, Any] = self._initial_state()

    # ------------------------------------------------------------------ text
    def _sentence(self, lo: int, hi: int) -> str:
        rng = self.rng
        n = rng.randint(lo, hi)
        words = [rng.choice(_WORDS) for _ in range(n)]
        r = rng.random()
        if r < 0.25:
            words.insert(rng.randrange(len(words)), rng.choice(_NAMES))
        elif r < 0.4:
            words.insert(rng.randrange(len(words)), rng.choice(_PLACES))
        elif r < 0.5:
            words.insert(rng.randrange(len(words)), str(rng.randint(2, 400)))
        text = " ".join(words)
        end = rng.choice(".......!?…")
        return text[0].upper() + text[1:] + end

    def _text(self, lo_words: int, hi_words: int) -> str:
        rng = self.rng
        target = rng.randint(lo_words, hi_words)
        parts: list[str] = []
        count = 0
        while count < target:
            s = self._sentence(5, 16)
            if rng.random() < 0.15:
                s = f'"{s}" says {rng.choice(_NAMES)}.'
            parts.append(s)
            count += s.count(" ") + 1
        return " ".join(parts)

    def _ts(self) -> str:
        minutes = self.turn * _MINUTES_PER_TURN + self.rng.randint(0, 6)
        d, rem = divmod(minutes, 24 * 60)
        h, m = divmod(rem, 60)
        return f"1247-{3 + d // 28 % 9:02d}-{1 + d % 28:02d}T{h:02d}:{m:02d}:{self.rng.randint(0, 59):02d}Z"

    # ----------------------------------------------------------------- setup
    def _item(self) -> dict[str, Any]:
        rng = self.rng
        iid = f"itm-{self._next_item:05d}"
        self._next_item += 1
        return {
            "id": iid,
            "name": rng.choice(_ITEM_NAMES),
            "qty": rng.randint(1, 5),
            "weight": round(rng.uniform(0.1, 12.0), 2),
            "magic": rng.random() < 0.15,
            "notes": None if rng.random() < 0.6 else self._sentence(4, 9),
        }

    def _npc(self, name: str) -> dict[str, Any]:
        rng = self.rng
        self._next_npc += 1
        return {
            "attitude": rng.choice(_ATTITUDES),
            "trust": round(rng.uniform(-1, 1), 3),
            "location": rng.choice(_PLACES),
            "met_turn": self.turn,
            "alive": True,
            "notes": [self._sentence(5, 12)],
            "secrets": None,
        }

    def _quest(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        qid = f"q{self._next_quest:03d}"
        self._next_quest += 1
        return qid, {
            "title": self._sentence(3, 6).rstrip(".!?…"),
            "giver": rng.choice(_NAMES),
            "status": "open",
            "objectives": [
                {"text": self._sentence(4, 10), "done": False}
                for _ in range(rng.randint(1, 4))
            ],
            "reward": {"gold": rng.randint(5, 500), "xp": round(rng.uniform(10, 400), 1)},
            "opened_turn": self.turn,
        }

    def _initial_state(self) -> dict[str, Any]:
        rng = self.rng
        characters: dict[str, Any] = {}
        for name, cls in (("Zoë", "bard"), ("Björn", "fighter"),
                          ("Kōji", "wizard"), ("Pell", "rogue")):
            max_hp = rng.randint(18, 42)
            characters[name] = {
                "class": cls,
                "level": 3,
                "hp": max_hp,
                "max_hp": max_hp,
                "xp": round(rng.uniform(900, 1100), 2),
                "gold": rng.randint(10, 90),
                "conditions": [],
                "stats": {s: rng.randint(8, 18) for s in ("str", "dex", "con", "int", "wis", "cha")},
                "inventory": [self._item() for _ in range(rng.randint(4, 8))],
                "spell_slots": {"1": 4, "2": 2, "3": 0},
            }
        npcs = {n: self._npc(n) for n in ("Garrick", "Isolde", "Oona")}
        npcs["~cursed~ Mirror"] = self._npc("~cursed~ Mirror")
        npcs["42"] = self._npc("42")
        quests = dict(self._quest() for _ in range(2))
        return {
            "schema": "rpg-session/1",
            "session": {
                "id": f"sess-{rng.randrange(16**8):08x}",
                "campaign": "The Drowned Crown",
                "turn": 0,
                "clock": {"day": 1, "minute": 480},
                "party_location": "Zoë's tavern",
                "model": {"name": "gm-large", "temperature": 0.8, "top_p": None},
            },
            "characters": characters,
            "npcs": npcs,
            "quests": quests,
            "combat": {"active": False, "round": 0, "order": [], "log": []},
            "flags": {
                "gate/north": False,
                "gate/south": True,
                "~cursed~": False,
                "42": 0,
                "Zoë's tavern": {"visits": 1, "owes_rent": False},
                "door~1/open": False,
                "mode": 1,
                "counters": {"rests": 0, "crits": 0, "deaths": 0, "rolls": 0},
            },
            "locations": {p: {"visits": 0, "last_turn": None} for p in _PLACES[:6]},
            "transcript": [],
        }

    # ----------------------------------------------------------------- turns
    def _message(self, role: str, speaker: str, content: str) -> dict[str, Any]:
        rng = self.rng
        tool_call = None
        if role == "gm" and rng.random() < 0.35:
            tool_call = {
                "name": rng.choice(_TOOLS),
                "arguments": {"dice": rng.choice(_DICE), "modifier": rng.randint(-2, 7)},
                "id": f"call_{rng.randrange(16**10):010x}",
            }
        return {
            "turn": self.turn,
            "role": role,
            "speaker": speaker,
            "content": content,
            "tool_call": tool_call,
            "tokens": len(content) // 4 + rng.randint(0, 9),
            "ts": self._ts(),
        }

    def _append_transcript(self) -> None:
        rng = self.rng
        tr = self.state["transcript"]
        speaker = rng.choice(list(self.state["characters"]))
        tr.append(self._message("user", speaker, self._text(16, 42)))
        gm = self._message("gm", "GM", self._text(70, 125))
        tr.append(gm)
        if gm["tool_call"] is not None:
            call = gm["tool_call"]
            tr.append({
                "turn": self.turn,
                "role": "tool",
                "speaker": call["name"],
                "content": None,
                "tool_call": None,
                "tool_result": {"call_id": call["id"], "value": rng.randint(1, 20),
                                "crit": rng.random() < 0.05},
                "ts": self._ts(),
            })

    def _mutate_characters(self) -> None:
        rng = self.rng
        chars = self.state["characters"]
        for _ in range(rng.randint(1, 3)):
            c = chars[rng.choice(list(chars))]
            r = rng.random()
            if r < 0.35:
                c["hp"] = max(0, min(c["max_hp"], c["hp"] + rng.randint(-9, 6)))
            elif r < 0.6:
                c["xp"] = round(c["xp"] + rng.uniform(0.5, 60.0), 2)
                if c["xp"] > 900 * c["level"] * 1.5:
                    c["level"] += 1
                    c["max_hp"] += rng.randint(4, 9)
            elif r < 0.8:
                if c["conditions"] and rng.random() < 0.5:
                    c["conditions"].pop(rng.randrange(len(c["conditions"])))
                else:
                    cond = rng.choice(_CONDITIONS)
                    if cond not in c["conditions"]:
                        c["conditions"].append(cond)
            elif r < 0.9:
                c["gold"] += rng.randint(-5, 25)
            else:
                stat = rng.choice(list(c["stats"]))
                c["stats"][stat] += rng.choice((-1, 1))
                slot = rng.choice(("1", "2", "3"))
                c["spell_slots"][slot] = max(0, c["spell_slots"][slot] + rng.choice((-1, 1)))

    def _mutate_inventory(self) -> None:
        rng = self.rng
        chars = self.state["characters"]
        inv = chars[rng.choice(list(chars))]["inventory"]
        r = rng.random()
        if r < 0.3 or not inv:
            inv.insert(rng.randint(0, len(inv)), self._item())
        elif r < 0.5 and len(inv) > 2:
            inv.pop(rng.randrange(len(inv)))
        elif r < 0.65:
            # move one item elsewhere
            item = inv.pop(rng.randrange(len(inv)))
            inv.insert(rng.randint(0, len(inv)), item)
        elif r < 0.72:
            # the player sorts the pack
            inv.sort(key=lambda it: (it["name"], it["id"]), reverse=rng.random() < 0.5)
        elif r < 0.9:
            it = rng.choice(inv)
            it["qty"] = max(0, it["qty"] + rng.choice((-1, 1, 2)))
        else:
            # hand an item to another character
            other = chars[rng.choice(list(chars))]["inventory"]
            if other is not inv and inv:
                other.append(inv.pop(rng.randrange(len(inv))))

    def _mutate_npcs(self) -> None:
        rng = self.rng
        npcs = self.state["npcs"]
        if rng.random() < 0.06:
            base = rng.choice(_NAMES)
            name = f"{base} {rng.choice(['the Younger', 'of Ravensmoor', 'Ironhand', '~Veiled~', 'II', '/ Shade'])}"
            if name not in npcs:
                npcs[name] = self._npc(name)
        for _ in range(rng.randint(0, 2)):
            n = npcs[rng.choice(list(npcs))]
            r = rng.random()
            if r < 0.4:
                i = _ATTITUDES.index(n["attitude"]) + rng.choice((-1, 1))
                n["attitude"] = _ATTITUDES[max(0, min(len(_ATTITUDES) - 1, i))]
                n["trust"] = round(max(-1.0, min(1.0, n["trust"] + rng.uniform(-0.2, 0.2))), 3)
            elif r < 0.6:
                n["location"] = rng.choice(_PLACES)
            elif r < 0.85:
                n["notes"].append(self._sentence(5, 12))
                if len(n["notes"]) > 6:
                    n["notes"].pop(0)
            elif r < 0.95:
                n["secrets"] = None if n["secrets"] else self._sentence(4, 8)
            else:
                n["alive"] = not n["alive"]

    def _mutate_quests(self) -> None:
        rng = self.rng
        quests = self.state["quests"]
        if rng.random() < 0.04:
            qid, q = self._quest()
            quests[qid] = q
        if rng.random() < 0.3 and quests:
            q = quests[rng.choice(list(quests))]
            r = rng.random()
            if r < 0.5:
                for obj in q["objectives"]:
                    if not obj["done"]:
                        obj["done"] = True
                        break
            else:
                q["status"] = rng.choice(_QUEST_STATUS)

    def _mutate_combat(self) -> None:
        rng = self.rng
        combat = self.state["combat"]
        if not combat["active"]:
            if rng.random() < 0.08:
                fighters = list(self.state["characters"]) + rng.sample(
                    list(self.state["npcs"]), k=min(3, len(self.state["npcs"])))
                order = [{"name": f, "initiative": rng.randint(1, 20) + rng.randint(-1, 4),
                          "hp": rng.randint(5, 60)} for f in fighters]
                order.sort(key=lambda e: -e["initiative"])
                combat.update(active=True, round=1, order=order, log=[])
            return
        order = combat["order"]
        r = rng.random()
        if r < 0.12 or len(order) <= 2:
            combat.update(active=False, round=0, order=[], log=[])   # combat ends: reset
            return
        if r < 0.65:
            order.append(order.pop(0))                      # next combatant's turn
        elif r < 0.8:
            order.pop(rng.randrange(len(order)))            # someone drops
        elif r < 0.9:
            rng.shuffle(order)                              # re-roll initiative
        else:
            i, j = rng.randrange(len(order)), rng.randrange(len(order))
            order[i], order[j] = order[j], order[i]         # ready / delay
        combat["round"] += 1
        entry = order[0]
        entry["hp"] = max(0, entry["hp"] - rng.randint(0, 8))
        combat["log"].append(f"r{combat['round']}: {entry['name']} acts")
        if len(combat["log"]) > 12:
            combat["log"].pop(0)

    def _mutate_flags(self) -> None:
        rng = self.rng
        flags = self.state["flags"]
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            if r < 0.25:
                k = rng.choice(("gate/north", "gate/south", "~cursed~", "door~1/open"))
                flags[k] = not flags[k]
            elif r < 0.5:
                k = rng.choice(list(flags["counters"]))
                flags["counters"][k] += 1
            elif r < 0.6:
                flags["42"] += 1
            elif r < 0.7:
                # the same logical value written by different tools: 1, 1.0, true
                flags["mode"] = rng.choice((1, 1.0, True))
            elif r < 0.8:
                t = flags["Zoë's tavern"]
                t["visits"] += 1
                t["owes_rent"] = not t["owes_rent"]
            elif r < 0.85:
                # an occasional new story flag, ids with digits and non-ASCII
                flags[f"{rng.choice(['seen', 'met', 'ŝtolen', 'opened'])}/{rng.randint(1, 60)}"] = True
            else:
                pass

    def _mutate_world(self) -> None:
        rng = self.rng
        s = self.state["session"]
        s["turn"] = self.turn
        clock = s["clock"]
        clock["minute"] += _MINUTES_PER_TURN + rng.randint(0, 20)
        if clock["minute"] >= 1440:
            clock["minute"] -= 1440
            clock["day"] += 1
        if rng.random() < 0.1:
            s["party_location"] = rng.choice(_PLACES)
            locs = self.state["locations"]
            loc = locs.setdefault(s["party_location"], {"visits": 0, "last_turn": None})
            loc["visits"] += 1
            loc["last_turn"] = self.turn
        if rng.random() < 0.02:
            s["model"]["temperature"] = round(rng.uniform(0.5, 1.1), 2)
            s["model"]["top_p"] = None if s["model"]["top_p"] else 0.95

    def play_turn(self) -> dict[str, Any]:
        self.turn += 1
        self._mutate_world()
        self._append_transcript()
        self._mutate_characters()
        self._mutate_inventory()
        self._mutate_npcs()
        self._mutate_quests()
        self._mutate_combat()
        self._mutate_flags()
        return self.state


def generate(turns: int, seed: int = DEFAULT_SEED) -> Iterator[dict[str, Any]]:
    """Yield the (same, in-place mutated) state dict after each of ``turns`` turns."""
    game = RpgSession(seed)
    for _ in range(turns):
        yield game.play_turn()


# --------------------------------------------------------------------------
# fixed change, growing state

def grow_to(base_bytes: int, seed: int = DEFAULT_SEED, check_every: int = 25) -> RpgSession:
    """Play ordinary turns until the state is at least ``base_bytes`` of JSON."""
    game = RpgSession(seed)
    while True:
        for _ in range(check_every):
            game.play_turn()
        if state_size(game.state) >= base_bytes:
            return game


_FIXED_TEXT = (
    "The lantern gutters as the party waits by gate/north; Zoë counts the "
    "coins twice and the ~cursed~ mirror hums a low note nobody admits to hearing."
)


def fixed_change(state: dict[str, Any], i: int) -> None:
    """The same small change every call (i only varies the values, not the shape)."""
    chars = state["characters"]
    c = chars["Zoë"]
    c["hp"] = 10 + i % 7
    c["xp"] = round(c["xp"] + 12.5, 2)
    flags = state["flags"]
    flags["gate/north"] = not flags["gate/north"]
    flags["counters"]["rolls"] += 1
    flags["mode"] = (1, 1.0, True)[i % 3]
    state["session"]["turn"] = state["session"]["turn"] + 1
    inv = chars["Björn"]["inventory"]
    if inv:
        inv[0]["qty"] = 1 + i % 4
    log = state.setdefault("fixed_log", [])
    log.append({"i": i, "text": _FIXED_TEXT})
    if len(log) > 20:
        log.pop(0)


def generate_fixed(base_bytes: int, turns: int, seed: int = DEFAULT_SEED,
                   base: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Yield a state of ~``base_bytes`` first, then the same state after each fixed change.

    Yields ``turns + 1`` times (the base state, then one per change). ``base``
    may be given (a state already grown, which will be mutated in place).
    """
    state = base if base is not None else grow_to(base_bytes, seed).state
    yield state
    for i in range(turns):
        fixed_change(state, i)
        yield state


def grown_states(sizes: list[int], seed: int = DEFAULT_SEED,
                 check_every: int = 25) -> list[tuple[int, bytes]]:
    """One ordinary session, captured as JSON bytes when it first reaches each size.

    Returns ``[(actual_bytes, json_bytes), ...]`` in the order of ``sorted(sizes)``;
    ``orjson.loads`` of the bytes gives an independent state to start from.
    """
    game = RpgSession(seed)
    out: list[tuple[int, bytes]] = []
    for target in sorted(sizes):
        while True:
            raw = orjson.dumps(game.state)
            if len(raw) >= target:
                out.append((len(raw), raw))
                break
            for _ in range(check_every):
                game.play_turn()
    return out
