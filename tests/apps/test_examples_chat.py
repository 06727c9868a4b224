"""The chat example (examples/chat.py): its scripted run, and a large run (50 rooms, 500
users) in which every delivery is checked: each user receives exactly the lines said in
its rooms, each sender's lines in order."""
import importlib.util
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import pyotp
from pyotp import GenServer

_PATH = Path(__file__).resolve().parents[2] / "examples" / "chat.py"
_spec = importlib.util.spec_from_file_location("example_chat", _PATH)
chat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chat)


def expected_and_check(users, transcripts):
    """Assert every user got exactly the lines of its rooms, in order per (room, sender)."""
    said = defaultdict(list)                       # room -> [(sender, text)] per sender order
    for name, (rooms, script) in users.items():
        for room, text in script:
            said[room].append((name, text))
    assert set(transcripts) == set(users)
    for name, (rooms, _) in users.items():
        got = transcripts[name]
        assert all(m[0] == "chat" for m in got)
        expected = Counter(("chat", room, who, text) for room in rooms for who, text in said[room])
        assert Counter(got) == expected, name
        # order: for each (room, sender), the texts come in the order they were said
        seen = defaultdict(list)
        for _, room, who, text in got:
            seen[(room, who)].append(text)
        for (room, who), texts in seen.items():
            assert texts == [t for w, t in said[room] if w == who], (name, room, who)
    return sum(len(t) for t in transcripts.values())


def test_scripted_main():
    result = pyotp.run(chat.main)
    t = result["transcripts"]
    assert t["bob"] == [("chat", "lobby", "alice", "hi all"), ("chat", "lobby", "bob", "hello alice")]
    assert [m[3] for m in t["carol"] if m[2] == "carol"] == ["yes, GenServers in Python!", "bye"]
    assert expected_and_check(chat.SCRIPT, t) == 2 * 2 + 3 * 2
    assert result["rooms_running"] == 2
    assert result["said"] == {"lobby": 2, "python": 3}


@pytest.mark.pyotp
async def test_fifty_rooms_five_hundred_users_every_delivery_checked():
    rng = random.Random(7)
    rooms = ["room-%02d" % i for i in range(50)]
    users = {}
    for u in range(500):
        mine = rng.sample(rooms, 3)
        script = [(room, "u%d-%s-%d" % (u, room, k)) for room in mine for k in range(2)]
        rng.shuffle(script)                       # interleave rooms; per room order kept
        users["user-%03d" % u] = (mine, script)

    await chat.start_chat()
    transcripts = await chat.run_chat(users)
    stats = [await GenServer.call(chat.room_name(r), ("stats",)) for r in rooms]
    running = (await chat.DynamicSupervisor.count_children(chat.ROOMS))["active"]
    deliveries = expected_and_check(users, transcripts)
    members = Counter(r for rs, _ in users.values() for r in rs)
    assert deliveries == sum(members[r] * 2 * members[r] for r in rooms)
    assert [s["said"] for s in stats] == [2 * members[r] for r in rooms]
    assert running == 50


@pytest.mark.pyotp
async def test_rooms_forget_members_that_exit_and_leave():
    async def member(parent, room, name):
        await chat.Chat.join(room, name)
        pyotp.send(parent, ("joined", name))
        msg = await pyotp.receive()
        if msg == "leave":
            await chat.Chat.leave(room)
            pyotp.send(parent, ("left", name))
            await pyotp.receive()

    await chat.start_chat()
    a = pyotp.spawn(member, pyotp.self(), "r", "a")
    b = pyotp.spawn(member, pyotp.self(), "r", "b")
    for n in ("a", "b"):
        await pyotp.receive(lambda m, n=n: m == ("joined", n))
    before = await GenServer.call(chat.room_name("r"), ("members",))
    ref = pyotp.monitor(a)
    pyotp.exit(a, "kill")
    await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
    after_exit = await GenServer.call(chat.room_name("r"), ("members",))
    pyotp.send(b, "leave")
    await pyotp.receive(lambda m: m == ("left", "b"))
    after_leave = await GenServer.call(chat.room_name("r"), ("members",))
    assert (before, after_exit, after_leave) == (["a", "b"], ["b"], [])


@pytest.mark.pyotp
async def test_crashed_room_is_restarted_under_the_same_name():
    await chat.start_chat()
    first = await chat.RoomSupervisor.open_room("lobby")
    again = await chat.RoomSupervisor.open_room("lobby")
    ref = pyotp.monitor(first)
    pyotp.exit(first, "kill")
    await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
    # the supervisor restarts it (permanent child) when it handles the EXIT, which was
    # queued before this call; the via name then points at the new pid
    await chat.DynamicSupervisor.which_children(chat.ROOMS)
    stats = await GenServer.call(chat.room_name("lobby"), ("stats",))
    second = GenServer.whereis(chat.room_name("lobby"))
    same = first == again
    moved = second is not None and second != first
    assert same and moved and stats == {"members": 0, "said": 0}
