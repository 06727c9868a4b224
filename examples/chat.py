"""The chat application: rooms supervised on demand, named through a Registry, talking
through PubSub.

    python examples/chat.py

* ``ChatRegistry`` (a unique ``Registry``) names every room:
  ``("via", Registry, ("ChatRegistry", "lobby"))``.
* ``RoomSupervisor`` (a ``DynamicSupervisor``) starts one ``Room`` GenServer per room, the
  first time someone opens it, and restarts it if it crashes.
* ``ChatPubSub`` (a ``PubSub``) carries the messages: a room broadcasts each message it
  is told on the topic ``"room:<name>"``, and every member process is subscribed to it.
* Users are plain processes: they join rooms, say things, and receive
  ``("chat", room, user, text)`` messages.

The program runs a small scripted conversation and ends by itself, printing what every
user saw. ``run_chat`` is the reusable part (the tests drive it with hundreds of users).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

try:
    import pyotp
except ImportError:  # running from a source checkout: python examples/chat.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import pyotp

from pyotp import GenServer, StartError
from pyotp.dynamic_supervisor import DynamicSupervisor
from pyotp.pubsub import PubSub
from pyotp.registry import Registry

REGISTRY = "ChatRegistry"
PUBSUB = "ChatPubSub"
ROOMS = "RoomSupervisor"


def room_name(room: str) -> Tuple[str, Any, Tuple[str, str]]:
    """The via name of a room's process."""
    return ("via", Registry, (REGISTRY, room))


def topic(room: str) -> str:
    return "room:" + room


class Room(GenServer):
    """One chat room: knows its members (and monitors them), broadcasts what they say."""

    @classmethod
    async def start_link(cls, room: str) -> Any:  # type: ignore[override]
        # what RoomSupervisor's (Room, room) child spec calls
        return await super().start_link(room, name=room_name(room))

    def init(self, room: str) -> Any:
        return ("ok", {"room": room, "members": {}, "said": 0})

    def handle_call(self, req: Any, from_: Any, st: Dict[str, Any]) -> Any:
        if req[0] == "join":
            _, user, pid = req
            if pid not in st["members"]:
                st["members"][pid] = (user, pyotp.monitor(pid))
            return ("reply", sorted(u for u, _ in st["members"].values()), st)
        if req[0] == "leave":
            entry = st["members"].pop(req[1], None)
            if entry is not None:
                pyotp.demonitor(entry[1], flush=True)
            return ("reply", "ok", st)
        if req[0] == "members":
            return ("reply", sorted(u for u, _ in st["members"].values()), st)
        if req[0] == "stats":
            return ("reply", {"members": len(st["members"]), "said": st["said"]}, st)
        return ("reply", ("error", ("unknown_request", req)), st)

    def handle_cast(self, req: Any, st: Dict[str, Any]) -> Any:
        if req[0] == "say":
            _, user, text = req
            st["said"] += 1
            PubSub.broadcast(PUBSUB, topic(st["room"]), ("chat", st["room"], user, text))
        return ("noreply", st)

    def handle_info(self, msg: Any, st: Dict[str, Any]) -> Any:
        if msg[0] == "DOWN":               # a member exited: forget it
            st["members"].pop(msg[3], None)
        return ("noreply", st)


class RoomSupervisor:
    """Starts rooms on demand under a DynamicSupervisor."""

    @staticmethod
    async def start_link() -> Any:
        return await DynamicSupervisor.start_link(name=ROOMS)

    @staticmethod
    async def open_room(room: str) -> Any:
        """The room's pid, starting the room if nobody has yet."""
        pid = GenServer.whereis(room_name(room))
        if pid is not None:
            return pid
        try:
            return await DynamicSupervisor.start_child(ROOMS, (Room, room))
        except StartError as e:            # someone opened it just before us
            if type(e.reason) is tuple and e.reason[0] == "already_started":
                return e.reason[1]
            raise


class Chat:
    """What a user process calls."""

    @staticmethod
    async def join(room: str, user: str) -> List[str]:
        """Subscribe the calling process to the room and become a member; returns the
        members. Subscribing first means no message said after the join is missed."""
        await RoomSupervisor.open_room(room)
        PubSub.subscribe(PUBSUB, topic(room))
        members: List[str] = await GenServer.call(room_name(room), ("join", user, pyotp.self()))
        return members

    @staticmethod
    async def leave(room: str) -> None:
        PubSub.unsubscribe(PUBSUB, topic(room))
        await GenServer.call(room_name(room), ("leave", pyotp.self()))

    @staticmethod
    def say(room: str, user: str, text: str) -> None:
        GenServer.cast(room_name(room), ("say", user, text))


async def start_chat() -> None:
    """Start the application's three long-lived pieces (linked to the caller)."""
    await Registry.start_link(keys="unique", name=REGISTRY)
    await PubSub.start_link(name=PUBSUB)
    await RoomSupervisor.start_link()


async def user(name: str, rooms: Sequence[str], script: Sequence[Tuple[str, str]],
               coordinator: Any) -> None:
    """A user: join `rooms`, wait for "go", say the `script` lines ((room, text) pairs),
    then collect every chat message until "finish" and report them."""
    for room in rooms:
        await Chat.join(room, name)
    pyotp.send(coordinator, ("joined", name))
    await pyotp.receive(lambda m: m == "go")
    for room, text in script:
        Chat.say(room, name, text)
    pyotp.send(coordinator, ("sent", name))
    got = []
    while True:
        msg = await pyotp.receive()
        if msg == "finish":
            break
        got.append(msg)
    pyotp.send(coordinator, ("transcript", name, got))


async def run_chat(users: Dict[str, Tuple[Sequence[str], Sequence[Tuple[str, str]]]]
                   ) -> Dict[str, List[Tuple[str, str, str, str]]]:
    """Run a conversation: ``users`` maps a user name to (rooms to join, lines to say).
    Every user joins first; then everyone speaks; once every room has handled every line
    (a call to each room, queued behind the lines), every user is told to finish and
    reports what it received. Returns user -> received ("chat", room, user, text)
    messages. Must run inside a process, with ``start_chat`` done."""
    me = pyotp.self()
    pids = {name: pyotp.spawn_link(user, name, rooms, script, me)
            for name, (rooms, script) in users.items()}
    for name in pids:
        await pyotp.receive(lambda m, name=name: m == ("joined", name))
    for pid in pids.values():
        pyotp.send(pid, "go")
    for name in pids:
        await pyotp.receive(lambda m, name=name: m == ("sent", name))
    for room in sorted({r for rooms, _ in users.values() for r in rooms}):
        await GenServer.call(room_name(room), ("stats",))   # every line before it is broadcast
    for pid in pids.values():
        pyotp.send(pid, "finish")
    out = {}
    for name in pids:
        _, _, got = await pyotp.receive(lambda m, name=name: m[0] == "transcript" and m[1] == name)
        out[name] = got
    return out


SCRIPT: Dict[str, Tuple[Sequence[str], Sequence[Tuple[str, str]]]] = {
    "alice": (["lobby", "python"], [("lobby", "hi all"), ("python", "anyone tried pyotp?")]),
    "bob": (["lobby"], [("lobby", "hello alice")]),
    "carol": (["python"], [("python", "yes, GenServers in Python!"), ("python", "bye")]),
}


async def main() -> Dict[str, Any]:
    await start_chat()
    transcripts = await run_chat(SCRIPT)
    said = {room: (await GenServer.call(room_name(room), ("stats",)))["said"]
            for room in ("lobby", "python")}
    stats = await DynamicSupervisor.count_children(ROOMS)
    return {"transcripts": transcripts, "said": said, "rooms_running": stats["active"]}


if __name__ == "__main__":
    result = pyotp.run(main)
    for name, got in result["transcripts"].items():
        print("%s saw:" % name)
        for _, room, who, text in got:
            print("   [%s] %s: %s" % (room, who, text))
    print("rooms running: %d, lines said per room: %s" % (result["rooms_running"], result["said"]))
