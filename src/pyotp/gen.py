"""Shared plumbing of the behaviours, as OTP's ``gen.erl``: name registration hooks for
``("global", name)`` and ``("via", module, key)`` names, and start-result handling.

A ``via`` module is any object with ``register_name(key, pid) -> "yes" | "no"``,
``unregister_name(key)``, ``whereis_name(key) -> pid | None`` (and optionally
``send(key, msg)``), exactly Elixir's ``{:via, module, name}`` contract.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from . import _core
from ._core import StartError

_global_hook: Optional[Callable[[str, Any, Any], Any]] = None


def set_global_hook(hook: Optional[Callable[[str, Any, Any], Any]]) -> None:
    """Installed by the distribution layer: handles ("global", name) names."""
    global _global_hook
    _global_hook = hook


def _name_hook(op: str, name: Any, pid: Any) -> Any:
    if name[0] == "via":
        mod, key = name[1], name[2]
        if op == "whereis":
            return mod.whereis_name(key)
        if op == "register":
            if mod.register_name(key, pid) in ("yes", True):
                return True
            return mod.whereis_name(key)
        if op == "unregister":
            return mod.unregister_name(key)
    if name[0] == "global":
        if _global_hook is None:
            if op == "whereis":
                return _local_globals.get(name[1])
            if op == "register":
                existing = _local_globals.get(name[1])
                if existing is not None and _core.is_alive(existing):
                    return existing
                _local_globals[name[1]] = pid
                return True
            if op == "unregister":
                _local_globals.pop(name[1], None)
                return None
        else:
            return _global_hook(op, name[1], pid)
    raise _core.BadArg("unsupported name %r" % (name,))


# Without distribution, ("global", name) names behave like local names (a one-node cluster).
_local_globals: Dict[Any, Any] = {}

_core._set_name_hook(_name_hook)


def start_result(result: Any) -> Any:
    """Turn ("ok", pid) | "ignore" | ("error", reason) into pid | None | StartError."""
    if type(result) is tuple and result[0] == "ok":
        return result[1]
    if result == "ignore":
        return None
    raise StartError(result[1])
