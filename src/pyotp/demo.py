"""``python -m pyotp demo``: a small supervised system showing the runtime at work.

A top supervisor runs: a PubSub, a DynamicSupervisor of chat rooms, a stats server, a
worker that crashes on purpose every so often (and is restarted), and a CircuitBreaker
guarding a service that goes down and comes back. Simulated users chat in the rooms.
A one-screen summary (processes, messages/s, restarts, chat deliveries, breaker state)
refreshes twice a second; the demo ends by itself after ``--seconds`` (default 6) or runs
until Ctrl-C with ``--forever``.

Then (unless ``--no-distribution``) the node becomes distributed and starts a second node
in a child process: an rpc into it, a second of remote GenServer calls, and the child
killed with SIGKILL, which this node sees as ``("nodedown", peer)``.

Run it from a shell::

    python -m pyotp demo --seconds 3
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import time
from typing import Any, Dict, List

import pyotp
from pyotp import GenServer
from . import _core
from .circuit_breaker import CircuitBreaker, CircuitOpenError
from .dynamic_supervisor import DynamicSupervisor
from .gen_event import EventHandler, EventManager
from .pubsub import PubSub
from .supervisor import Supervisor

PUBSUB = "demo_pubsub"
ROOMS = ["lobby", "python", "erlang", "random"]


class Stats(GenServer):
    """Counts what happens, for the summary."""

    def init(self, _: Any) -> Any:
        return ("ok", {"restarts": -1, "said": 0, "delivered": 0, "rejected": 0, "ok_calls": 0,
                       "failed_calls": 0, "breaker": "closed", "trips": 0})

    def handle_cast(self, msg: Any, s: Dict[str, Any]) -> Any:
        kind = msg[0]
        if kind == "breaker":
            s["breaker"] = msg[1]
            s["trips"] += msg[1] == "open"
        else:
            s[kind] += msg[1] if len(msg) > 1 else 1
        return ("noreply", s)

    def handle_call(self, req: Any, from_: Any, s: Dict[str, Any]) -> Any:
        return ("reply", dict(s), s)


class Crashy(GenServer):
    """A worker that crashes on purpose; its supervisor restarts it."""

    def init(self, _: Any) -> Any:
        GenServer.cast("demo_stats", ("restarts",))
        pyotp.send_after(pyotp.self(), "crash", random.uniform(0.6, 1.2))
        return ("ok", None)

    def handle_info(self, msg: Any, s: Any) -> Any:
        raise RuntimeError("crashing on purpose (the supervisor will restart me)")


class Room(GenServer):
    """One chat room: relays what users say to the room's PubSub topic."""

    def init(self, name: str) -> Any:
        return ("ok", name)

    def handle_cast(self, msg: Any, room: str) -> Any:
        PubSub.broadcast(PUBSUB, "room:" + room, ("chat", room, msg))
        return ("noreply", room)


class BreakerEvents(EventHandler):
    def init(self, _: Any) -> Any:
        return ("ok", None)

    def handle_event(self, event: Any, s: Any) -> Any:
        GenServer.cast("demo_stats", ("breaker", event[3]))
        return ("ok", s)


class Backend:
    """A service that is down for a while every couple of seconds."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, x: Any) -> Any:
        if (time.monotonic() - self.t0) % 2.5 > 1.6:
            raise ConnectionError("backend unavailable")
        return ("ok", x)


async def user(name: str, rooms: List[str]) -> None:
    for r in rooms:
        PubSub.subscribe(PUBSUB, "room:" + r)
    pyotp.send_after(pyotp.self(), "speak", random.uniform(0.01, 0.05))
    while True:
        msg = await pyotp.receive()
        if msg == "speak":
            GenServer.cast(("via", _RoomNames, random.choice(rooms)), (name, "hello"))
            GenServer.cast("demo_stats", ("said",))
            pyotp.send_after(pyotp.self(), "speak", random.uniform(0.01, 0.05))
        elif msg[0] == "chat":
            GenServer.cast("demo_stats", ("delivered",))


class _RoomNames:
    """A tiny via-module so rooms are addressed by room name."""
    table: Dict[str, Any] = {}

    @classmethod
    def register_name(cls, key: str, pid: Any) -> str:
        if key in cls.table and pyotp.is_alive(cls.table[key]):
            return "no"
        cls.table[key] = pid
        return "yes"

    @classmethod
    def unregister_name(cls, key: str) -> None:
        cls.table.pop(key, None)

    @classmethod
    def whereis_name(cls, key: str) -> Any:
        pid = cls.table.get(key)
        return pid if pid is not None and pyotp.is_alive(pid) else None


async def breaker_client() -> None:
    while True:
        try:
            await CircuitBreaker.call("demo_breaker", 1)
            GenServer.cast("demo_stats", ("ok_calls",))
        except CircuitOpenError:
            GenServer.cast("demo_stats", ("rejected",))
        except ConnectionError:
            GenServer.cast("demo_stats", ("failed_calls",))
        await pyotp.sleep(0.02)


def _summary(stats: Dict[str, Any], rate: float, elapsed: float, tty: bool) -> str:
    lines = [
        "pyotp demo  t=%4.1fs   processes=%d   messages/s=%s" % (
            elapsed, len(pyotp.processes()), format(int(rate), ",")),
        "  supervisor restarts of the crashing worker: %d" % max(stats["restarts"], 0),
        "  chat: %d messages said, %d deliveries to room members" % (stats["said"], stats["delivered"]),
        "  circuit breaker: %-9s trips=%d  ok=%d  failed=%d  rejected fast=%d" % (
            stats["breaker"], stats["trips"], stats["ok_calls"], stats["failed_calls"], stats["rejected"]),
    ]
    text = "\n".join(lines)
    return ("\x1b[H\x1b[2J" + text) if tty else text + "\n"


async def demo_main(seconds: float, forever: bool, users: int, distribution: bool = True) -> Dict[str, Any]:
    _RoomNames.table.clear()
    await Supervisor.start_link([
        {"id": "pubsub", "start": (_start_pubsub, ())},
        {"id": "stats", "start": (_named, (Stats.start_link, "demo_stats"))},
        {"id": "events", "start": (_named, (EventManager.start_link, "demo_events"))},
        {"id": "rooms", "start": (_named, (DynamicSupervisor.start_link, "demo_rooms")),
         "type": "supervisor"},
        {"id": "crashy", "start": (Crashy.start_link, (None,))},
    ], strategy="one_for_one", max_restarts=1000, max_seconds=1, name="demo_sup")
    await EventManager.add_handler("demo_events", BreakerEvents, None)
    await CircuitBreaker.start_link(service=Backend(), name="demo_breaker", failure_threshold=3,
                                    reset_timeout=0.4, events="demo_events")
    for room in ROOMS:
        await DynamicSupervisor.start_child("demo_rooms", {"id": room, "start": (_start_room, (room,))})
    for i in range(users):
        pyotp.spawn(user, "user%d" % i, random.sample(ROOMS, 2))
    pyotp.spawn(breaker_client)
    tty = sys.stdout.isatty()
    t0 = time.monotonic()
    last_t, last_n = t0, _core._stats()["dispatched"]
    stats: Dict[str, Any] = {}
    while forever or time.monotonic() - t0 < seconds:
        await pyotp.sleep(0.5)
        now, n = time.monotonic(), _core._stats()["dispatched"]
        stats = await GenServer.call("demo_stats", "get")
        sys.stdout.write(_summary(stats, (n - last_n) / (now - last_t), now - t0, tty))
        sys.stdout.flush()
        last_t, last_n = now, n
    if distribution:
        stats["distribution"] = await two_nodes()
    print("\ndemo finished: stopping the supervision tree")
    return stats


class Echo(GenServer):
    """The peer node's server: answers every call with its request."""

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        return ("reply", req, state)


def run_peer(name: str, cookie: str) -> None:
    """The second node of the demo (a child process): serves ``demo_echo`` until killed."""
    async def main() -> None:
        await Echo.start(None, name="demo_echo")
        print("ready", flush=True)
        await pyotp.receive(lambda m: m == "stop")
    pyotp.run(main, node=name, cookie=cookie)


async def two_nodes(seconds: float = 1.0) -> Dict[str, Any]:
    """This node and a peer in a child process: rpc, remote calls, nodedown on SIGKILL."""
    from .dist import Node, rpc
    cookie = secrets.token_hex(8)
    me = "pyotp_demo_%d@127.0.0.1" % os.getpid()
    peer = "pyotp_demo_peer_%d@127.0.0.1" % os.getpid()
    await Node.start(me, cookie=cookie)
    proc = subprocess.Popen([sys.executable, "-c", "from pyotp.demo import run_peer; run_peer(%r, %r)"
                             % (peer, cookie)], stdout=subprocess.PIPE, text=True)
    out: Dict[str, Any] = {"peer": peer}
    try:
        assert proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError("the peer node did not start (exit status %s)" % proc.wait())
        print("\ntwo nodes: %s and %s (a child process)" % (me, peer))
        Node.monitor_nodes(True)
        out["peer_os_pid"] = await rpc.call(peer, "os", "getpid", [])
        print("  rpc.call(peer, 'os', 'getpid', []) -> %d (the child's pid: %d)"
              % (out["peer_os_pid"], proc.pid))
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            for _ in range(100):
                n += await GenServer.call(("demo_echo", peer), 1)
        out["calls_per_s"] = n / (time.monotonic() - t0)
        print("  remote GenServer.call: %s calls/s" % format(int(out["calls_per_s"]), ","))
        proc.kill()
        out["nodedown"] = await pyotp.receive(lambda m: m == ("nodedown", peer), timeout=10)
        print("  peer killed with SIGKILL: this node got %r" % (out["nodedown"],))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        await Node.stop()
    return out


async def _named(start: Any, name: str) -> Any:
    return await start(None, name=name)


async def _start_pubsub() -> Any:
    return await PubSub.start_link(name=PUBSUB)


async def _start_room(room: str) -> Any:
    return await Room.start_link(room, name=("via", _RoomNames, room))


def run_demo(seconds: float = 6.0, forever: bool = False, users: int = 40,
             distribution: bool = True) -> Dict[str, Any]:
    """Run the demo on a fresh node; returns the final counters (used by its test)."""
    import logging
    logging.getLogger("pyotp").setLevel(logging.CRITICAL)   # the crashes are the point
    try:
        return pyotp.run(demo_main, seconds, forever, users, distribution)
    except KeyboardInterrupt:
        print("\ninterrupted")
        return {}


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="how long to run (default 6); ignored with --forever")
    parser.add_argument("--forever", action="store_true", help="run until Ctrl-C")
    parser.add_argument("--users", type=int, default=40, help="simulated chat users (default 40)")
    parser.add_argument("--no-distribution", action="store_true",
                        help="skip the second part (a peer node in a child process)")


def _register() -> None:
    from .cli import subcommand

    @subcommand("demo", "run a live demo: supervision, chat over PubSub, a circuit breaker",
                _demo_arguments)
    def demo(args: argparse.Namespace) -> int:
        if args.users < 1 or args.seconds <= 0:
            from .cli import CliError
            raise CliError("--users must be >= 1 and --seconds > 0")
        run_demo(args.seconds, args.forever, args.users, not args.no_distribution)
        return 0


_register()
