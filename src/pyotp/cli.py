"""The ``python -m pyotp`` command line.

Subcommands live in ``SUBCOMMANDS`` (name -> ``Subcommand``); adding one is one decorated
function (plus, if it takes options, a function adding them to its parser), in this file or
in a module listed in ``SUBCOMMAND_MODULES`` (imported when the parser is built)::

    def _demo_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n", type=int, default=10)

    @subcommand("demo", "run the demo", _demo_arguments)
    def demo(args: argparse.Namespace) -> int:
        ...
        return 0

A handler returns the exit status; raising ``CliError`` prints ``pyotp <cmd>: error: ...``
on stderr and exits with status 2 (as argparse does for usage errors).

``run``::

    python -m pyotp run package.module:ApplicationClass --config config/config.toml [--env prod]

loads the configuration (``pyotp.config``; the environment comes from ``--env``, else
``PYOTP_ENV``, else ``dev``), imports the class, starts it and its dependencies
(``Application.ensure_all_started``) on a node (``pyotp.run``) and runs until SIGINT or
SIGTERM. It prints ``pyotp: started <app> ...`` on stdout once everything is up and
``pyotp: stopped <app> ...`` after stopping all applications in reverse start order.

Exit status: 0 after a signal; 1 if an application fails to start or a permanent (or
abnormally exiting transient) application terminates; 2 for usage errors (bad
``module:Class``, not an Application, missing or invalid configuration); 128+signal
number if a second signal arrives while stopping (the process exits at once).

With ``--name NAME@HOST`` (and ``--cookie``, default ``~/.erlang.cookie``) the node is
distributed; ``init:stop()`` from another node (``python -m pyotp stop NAME@HOST``,
``erl_call -a 'init stop []'``) stops it as SIGTERM does. ``--console`` lets
``python -m pyotp remsh`` run code in it.

``remsh``, ``rpc``, ``stop`` (docs/operations.md)::

    python -m pyotp remsh NAME@HOST [--cookie C] [--tls-certfile PEM --tls-keyfile PEM --tls-cafile PEM]
    python -m pyotp rpc NAME@HOST module function [arg ...] [--cookie C] [--timeout S]
    python -m pyotp stop NAME@HOST [--cookie C]

``rpc`` prints the result's ``repr`` and exits 0, or prints the ``badrpc`` reason on stderr
and exits 1; each argument is a Python literal, else an atom (``erlang whereis rex``).
``stop`` exits 0 once the node accepted ``init:stop()``, 1 if it cannot be reached.
``remsh`` exits 0 after Ctrl-D, 1 if the node cannot be reached or runs no console.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from . import _signals

if TYPE_CHECKING:
    from .application import AppClass

__all__ = ["Subcommand", "SUBCOMMANDS", "SUBCOMMAND_MODULES", "subcommand", "CliError", "build_parser", "main",
           "load_application_class"]

Handler = Callable[[argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Subcommand:
    """One ``python -m pyotp <name>`` subcommand."""
    name: str
    help: str
    handler: Handler
    arguments: Optional[Arguments] = None


SUBCOMMANDS: Dict[str, Subcommand] = {}

# Modules that register subcommands when imported (with @subcommand at import time);
# build_parser imports them, so their cost is paid only by the command line.
SUBCOMMAND_MODULES: List[str] = ["pyotp.demo"]


def subcommand(name: str, help: str,
               arguments: Optional[Arguments] = None) -> Callable[[Handler], Handler]:
    """Register ``fn(args) -> exit status`` as the subcommand ``name``; ``arguments``
    adds its options to its argparse parser.

    >>> @subcommand("hello", "print hello")
    ... def hello(args):
    ...     print("hello")
    ...     return 0
    """
    if not name or not isinstance(name, str):
        raise ValueError("subcommand name must be a non-empty str, got %r" % (name,))

    def register(fn: Handler) -> Handler:
        SUBCOMMANDS[name] = Subcommand(name, help, fn, arguments)
        return fn

    return register


class CliError(Exception):
    """A usage error: printed as one line on stderr, exit status 2.

    >>> raise CliError("config file missing")
    Traceback (most recent call last):
    CliError: config file missing
    """


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every registered subcommand.

    >>> build_parser().parse_args(["run", "m:App"]).command
    'run'
    """
    for mod in SUBCOMMAND_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    parser = argparse.ArgumentParser(prog="python -m pyotp",
                                     description="pyotp command-line tools")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for sc in SUBCOMMANDS.values():
        p = subs.add_parser(sc.name, help=sc.help, description=sc.help)
        if sc.arguments is not None:
            sc.arguments(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return the exit
    status.

    It runs the command until it is done; for ``run``, until the node is stopped (Ctrl-C,
    SIGTERM, or a permanent application exiting)::

        main(["run", "examples.my_app.application:MyApp",
              "--config", "examples/my_app/config/config.toml"])    # -> 0 once stopped
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return SUBCOMMANDS[args.command].handler(args)
    except CliError as e:
        print("pyotp %s: error: %s" % (args.command, e), file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("pyotp %s: interrupted" % args.command, file=sys.stderr, flush=True)
        return 130


# ---------------------------------------------------------------------------------------
# run

def load_application_class(target: str) -> "AppClass":
    """Import ``"package.module:Class"`` and check it is an Application subclass; raises
    CliError with a one-line explanation otherwise.

    >>> load_application_class("examples.my_app.application:MyApp").name
    'my_app'
    """
    from .application import Application
    mod_name, sep, attr = target.partition(":")
    if not sep or not mod_name or not attr:
        raise CliError("application must be given as package.module:ApplicationClass, got %r"
                       % target)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (mod_name == e.name or mod_name.startswith(e.name + ".")):
            raise CliError("cannot import module %r: no module named %r (is it on PYTHONPATH?)"
                           % (mod_name, e.name)) from None
        raise CliError("error while importing module %r: %s" % (mod_name, _one_line(e))) from None
    except Exception as e:
        raise CliError("error while importing module %r: %s" % (mod_name, _one_line(e))) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError("module %r has no attribute %r" % (mod_name, attr))
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Application) and obj is not Application):
        raise CliError("%s is not an Application subclass (it is %s)" % (target, _describe(obj)))
    return obj


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return "the class %s.%s" % (obj.__module__, obj.__qualname__)
    return "a %s" % type(obj).__name__


def _one_line(e: BaseException) -> str:
    where = ""
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        last = tb[-1]
        where = " (%s, line %s)" % (last.filename, last.lineno)
    if isinstance(e, SyntaxError) and e.filename:
        where = " (%s, line %s)" % (e.filename, e.lineno)
        return "SyntaxError: %s%s" % (e.msg, where)
    return "%s: %s%s" % (type(e).__name__, e, where)


def _run_arguments(p: argparse.ArgumentParser) -> None:
    from .application import RESTART_TYPES
    p.add_argument("application", metavar="MODULE:CLASS",
                   help="the Application subclass to start, e.g. my_app.application:MyApp")
    p.add_argument("-c", "--config", metavar="PATH",
                   help="base TOML configuration file (its directory's <env>.toml is overlaid)")
    p.add_argument("-e", "--env", metavar="ENV",
                   help="configuration environment (default: $PYOTP_ENV, else dev)")
    p.add_argument("--type", choices=RESTART_TYPES, default="permanent",
                   help="restart type of the started applications (default: permanent: if "
                        "one terminates, the runner stops with status 1)")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="logging level for the 'pyotp' logger and the application (default: warning)")
    p.add_argument("--shutdown-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="after the applications stopped, how long leftover processes get "
                        "before they are killed (default: 5)")
    p.add_argument("--name", metavar="NAME@HOST",
                   help="make the node distributed under this name (see docs/operations.md)")
    p.add_argument("--cookie", metavar="COOKIE",
                   help="with --name: the distribution cookie (default: ~/.erlang.cookie)")
    p.add_argument("--console", action="store_true",
                   help="with --name: let `python -m pyotp remsh` run Python code in this node "
                        "(full trust for whoever has the cookie; off by default)")
    _tls_arguments(p)


@subcommand("run", "start an application and run until SIGINT/SIGTERM", _run_arguments)
def run_command(args: argparse.Namespace) -> int:
    """``python -m pyotp run``: see the module documentation."""
    from . import config as _config
    from .runtime import run

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        env = _config._check_env(args.env) if args.env else _config.current_env()
        os.environ[_config.ENV_VAR] = env
        if args.config is not None:
            _config.configure(args.config, env)
    except _config.ConfigError as e:
        raise CliError(str(e)) from None
    cls = load_application_class(args.application)
    dist: Dict[str, Any] = {}
    if args.name:
        dist = {"node": args.name, "cookie": _cookie(args.cookie), "console": args.console,
                "tls": _tls(args)}
    elif args.cookie or args.console or _tls(args):
        raise CliError("--cookie, --console and --tls-* need --name NAME@HOST")
    status: int = run(_serve, cls, args.type, env, shutdown_timeout=args.shutdown_timeout, **dist)
    return status


def _say(msg: str) -> None:
    print(msg, flush=True)


async def _serve(cls: "AppClass", restart_type: str, env: str) -> int:
    from .application import Application, ApplicationStartError

    def on_signal(signum: int) -> None:
        _say("pyotp: received %s, stopping %s" % (_signals.signal_name(signum), cls.name))
        Application.system_stop(("signal", _signals.signal_name(signum)))

    # the first signal stops the applications in order (a second one exits at once)
    with _signals.stop_on_signals(asyncio.get_running_loop(), on_signal):
        try:
            await Application.ensure_all_started(cls, type=restart_type)
        except ApplicationStartError as e:
            print("pyotp run: error: %s" % e, file=sys.stderr, flush=True)
            return 1
        _say("pyotp: started %s (env %s; applications: %s)"
             % (cls.name, env, ", ".join(Application.started_applications()) or "none"))
        reason = await Application.await_system_stop()
        stopped = await Application.stop_all()
        if type(reason) is tuple and len(reason) == 2 and reason[0] == "signal":
            _say("pyotp: stopped %s (%s; stopped %s)" % (cls.name, reason[1], ", ".join(stopped)))
            return 0
        if type(reason) is tuple and len(reason) == 3 and reason[0] == "application_terminated":
            print("pyotp run: error: application %s terminated: %r" % (reason[1], reason[2]),
                  file=sys.stderr, flush=True)
            _say("pyotp: stopped %s (application %s terminated; stopped %s)"
                 % (cls.name, reason[1], ", ".join(stopped) or "nothing"))
            return 1
        if type(reason) is tuple and len(reason) == 2 and reason[0] in ("init", "halt"):
            # a remote init:stop() / halt(): pyotp.dist.beam_api
            why = "init:stop" if reason[0] == "init" else "halt(%s)" % (reason[1],)
            _say("pyotp: stopped %s (%s; stopped %s)" % (cls.name, why, ", ".join(stopped)))
            return 0
        _say("pyotp: stopped %s (%r; stopped %s)" % (cls.name, reason, ", ".join(stopped)))
        return 0


# ---------------------------------------------------------------------------------------
# remsh, rpc, stop: operating a running node (the work is in pyotp.remsh)

def _cookie(explicit: Optional[str]) -> str:
    from .remsh import CookieError, read_cookie
    try:
        return read_cookie(explicit)
    except CookieError as e:
        raise CliError(str(e)) from None


def _tls_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-certfile", metavar="PEM",
                   help="distribution over TLS: this node's certificate (see docs/distribution.md)")
    p.add_argument("--tls-keyfile", metavar="PEM", help="with --tls-certfile: its private key")
    p.add_argument("--tls-cafile", metavar="PEM",
                   help="with --tls-certfile: the CA that signs the peers' certificates")


def _tls(args: argparse.Namespace) -> Optional[Dict[str, str]]:
    """Node.start's tls dict from the --tls-* options (None: plain TCP)."""
    if not args.tls_certfile:
        if args.tls_keyfile or args.tls_cafile:
            raise CliError("--tls-keyfile and --tls-cafile need --tls-certfile")
        return None
    tls = {"certfile": args.tls_certfile}
    for key in ("keyfile", "cafile"):
        value = getattr(args, "tls_" + key)
        if value:
            tls[key] = value
    return tls


def _target_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("node", metavar="NAME@HOST", help="the running node")
    p.add_argument("--cookie", metavar="COOKIE", help="the node's cookie (default: ~/.erlang.cookie)")
    _tls_arguments(p)


def _check_target(node: str) -> None:
    if node.count("@") != 1 or not all(node.split("@")):
        raise CliError("node name must look like name@host, got %r" % node)


def _rpc_arguments(p: argparse.ArgumentParser) -> None:
    _target_arguments(p)
    p.add_argument("module")
    p.add_argument("function")
    p.add_argument("args", nargs="*", metavar="ARG",
                   help="a Python literal (42, 'text', [1, 2]), else an atom")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="give up after this long (exit status 1; default: wait)")


@subcommand("remsh", "open a Python console inside a running node", _target_arguments)
def remsh_command(args: argparse.Namespace) -> int:
    """``python -m pyotp remsh``: see the module documentation."""
    from .remsh import run_remsh
    _check_target(args.node)
    return run_remsh(args.node, _cookie(args.cookie), tls=_tls(args))


@subcommand("rpc", "call module:function(args) on a running node, print the result", _rpc_arguments)
def rpc_command(args: argparse.Namespace) -> int:
    """``python -m pyotp rpc``: see the module documentation."""
    from .remsh import parse_arg, rpc_once
    _check_target(args.node)
    r = rpc_once(args.node, _cookie(args.cookie), args.module, args.function,
                 [parse_arg(a) for a in args.args], args.timeout, tls=_tls(args))
    if type(r) is tuple and len(r) == 2 and r[0] == "badrpc":
        print("pyotp rpc: badrpc: %r" % (r[1],), file=sys.stderr, flush=True)
        return 1
    print(repr(r), flush=True)
    return 0


@subcommand("stop", "stop a running node (init:stop(): its normal shutdown)", _target_arguments)
def stop_command(args: argparse.Namespace) -> int:
    """``python -m pyotp stop``: see the module documentation."""
    from .remsh import rpc_once
    _check_target(args.node)
    r = rpc_once(args.node, _cookie(args.cookie), "init", "stop", [], 30.0, tls=_tls(args))
    if r == "ok":
        return 0
    if type(r) is tuple and len(r) == 2 and r[0] == "badrpc" and r[1] == "nodedown":
        print("pyotp stop: error: cannot connect to %s (is it running? same cookie?)" % args.node,
              file=sys.stderr, flush=True)
    else:
        print("pyotp stop: error: %s answered %r" % (args.node, r), file=sys.stderr, flush=True)
    return 1


def _observe_arguments(p: argparse.ArgumentParser) -> None:
    """top and dashboard: the node as NAME@HOST or --node NAME@HOST (pyotp or BEAM)."""
    p.add_argument("target", metavar="NAME@HOST", nargs="?",
                   help="the running node, pyotp or Erlang/Elixir (or --node)")
    p.add_argument("--node", metavar="NAME@HOST", default=None, help="the running node")
    p.add_argument("--cookie", metavar="COOKIE", help="the node's cookie (default: ~/.erlang.cookie)")
    _tls_arguments(p)


def _observed(args: argparse.Namespace) -> str:
    if (args.target is None) == (args.node is None):
        raise CliError("name the node once: NAME@HOST or --node NAME@HOST")
    node = str(args.target or args.node)
    _check_target(node)
    return node


def _top_arguments(p: argparse.ArgumentParser) -> None:
    _observe_arguments(p)
    p.add_argument("--sort", choices=("reductions", "message_queue_len", "memory", "messages_received"),
                   default="reductions", help="order of the process table (largest first)")
    p.add_argument("-n", type=int, default=20, help="rows shown (default 20)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between screens")
    p.add_argument("--iterations", type=int, default=None, help="stop after this many screens")


@subcommand("top", "a top-like view of a running node's processes", _top_arguments)
def top_command(args: argparse.Namespace) -> int:
    """``python -m pyotp top``: see pyotp.top."""
    from .top import run_top
    node = _observed(args)
    if not 0 <= args.n <= 1000:
        raise CliError("-n must be in 0..1000")
    return run_top(node, _cookie(args.cookie), args.sort, args.n, args.interval,
                   args.iterations, tls=_tls(args))


def _dashboard_arguments(p: argparse.ArgumentParser) -> None:
    _observe_arguments(p)
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --token)")
    p.add_argument("--token", default=None, help="secret the browser must send (?token=...)")


@subcommand("dashboard", "serve the web dashboard of a running node", _dashboard_arguments)
def dashboard_command(args: argparse.Namespace) -> int:
    """``python -m pyotp dashboard``: the dashboard of another node, read through rpc."""
    from . import _core, runtime
    from .dashboard import DashboardError, source_for, start
    from .remsh import client_name
    node = _observed(args)

    async def main() -> int:
        try:
            d = await start(args.port, args.host, args.token, await source_for(node))
        except (DashboardError, OSError) as e:
            raise CliError(str(e)) from None
        print("pyotp dashboard: %s on %s" % (node, d.url), flush=True)
        await _core.receive(lambda m: False)
        return 0

    try:
        return int(runtime.run(main, node=client_name(node), cookie=_cookie(args.cookie),
                               hidden=True, tls=_tls(args)))
    except KeyboardInterrupt:
        return 0
