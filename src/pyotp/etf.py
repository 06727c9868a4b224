"""Erlang External Term Format: the codec pyotp's distribution uses, for direct use too.

The codec is compiled (``src/core/etf.pyx`` inside ``pyotp._core``); this module only
re-exports it. The type mapping and the ``python=True`` extension are documented in
``docs/etf.md``.

>>> from pyotp.etf import term_to_binary, binary_to_term, Atom
>>> binary_to_term(term_to_binary((Atom("ok"), [1, 2], b"bin")))
(Atom('ok'), [1, 2], b'bin')
"""
from pyotp._core import (
    ETF_MAX_DEPTH,
    PYOTP_EXT_MARKER,
    Atom,
    BitString,
    DecodeError,
    ExportFun,
    ImproperList,
    ListKey,
    MapKey,
    OpaqueFun,
    Pid,
    Port,
    Reference,
    TermTooDeep,
    binary_to_term,
    decode_term,
    decode_with_version,
    encode_term_into,
    term_to_binary,
    term_to_iovec,
)

__all__ = [
    "ETF_MAX_DEPTH",
    "PYOTP_EXT_MARKER",
    "Atom",
    "BitString",
    "DecodeError",
    "ExportFun",
    "ImproperList",
    "ListKey",
    "MapKey",
    "OpaqueFun",
    "Pid",
    "Port",
    "Reference",
    "TermTooDeep",
    "binary_to_term",
    "decode_term",
    "decode_with_version",
    "encode_term_into",
    "term_to_binary",
    "term_to_iovec",
]


# ---------------------------------------------------------------------------------------
# The restricted unpickler of Python payloads (docs/distribution.md, "Security")

import builtins as _builtins  # noqa: E402
import collections as _collections  # noqa: E402
import datetime as _datetime  # noqa: E402
import decimal as _decimal  # noqa: E402
import importlib as _importlib  # noqa: E402
import io as _io  # noqa: E402
import pickle as _pickle  # noqa: E402
import types as _types  # noqa: E402
from typing import Any as _Any, Dict as _Dict, Iterable as _Iterable, List as _List  # noqa: E402
from typing import Optional as _Optional, Tuple as _Tuple  # noqa: E402

from pyotp import _core  # noqa: E402


class PayloadRefused(_pickle.UnpicklingError):
    """A pickled value named a global that the receiving node does not allow (see
    SafeUnpickler). Distribution closes the connection with this reason."""


def _exit(*args: _Any) -> _Any:
    # pyotp.Exit is a plain Python class: the payload gets this factory, never the class
    # (a crafted BUILD on a class object would set its attributes)
    return _core.Exit(*args)


def _safe_globals() -> _Dict[_Tuple[str, str], _Any]:
    """The fixed safe set: what a pickle may name on every node that accepts Python
    payloads. Only C types (their attributes cannot be set) and functions that build
    values; no function that reaches the file system, processes or code."""
    safe: _Dict[_Tuple[str, str], _Any] = {}
    for name in ("set", "frozenset", "complex", "bytearray", "range", "slice", "bytes", "str",
                 "int", "float", "bool", "tuple", "list", "dict", "Ellipsis", "NotImplemented"):
        safe[("builtins", name)] = getattr(_builtins, name)
    for name, obj in vars(_builtins).items():
        if isinstance(obj, type) and issubclass(obj, BaseException):
            safe[("builtins", name)] = obj
    for name in ("OrderedDict", "deque", "defaultdict"):
        safe[("collections", name)] = getattr(_collections, name)
    for name in ("date", "time", "datetime", "timedelta", "timezone"):
        safe[("datetime", name)] = getattr(_datetime, name)
    safe[("decimal", "Decimal")] = _decimal.Decimal
    for name in ("_make_atom", "_make_pid", "_make_reference", "BitString", "ImproperList",
                 "ListKey", "MapKey", "ExportFun", "OpaqueFun", "Port"):
        safe[("pyotp._core", name)] = getattr(_core, name)
    safe[("pyotp._core", "Exit")] = _exit
    return safe


SAFE_GLOBALS = frozenset(_safe_globals())
"""(module, name) pairs every SafeUnpickler allows: builtin containers and value types
(set, frozenset, complex, bytearray, range, slice, ...), builtin exception classes,
collections.OrderedDict/deque/defaultdict, datetime's date/time/datetime/timedelta/timezone,
decimal.Decimal, and pyotp's own term classes (Atom, Pid, Reference, BitString, ...) and
``pyotp.Exit``. Never ``eval``/``exec``/``getattr``/``__import__`` or anything of os,
subprocess and the like."""


class _Unpickler(_pickle.Unpickler):
    policy: "SafeUnpickler"

    def find_class(self, module: str, name: str) -> _Any:
        return self.policy.find_class(module, name)


class SafeUnpickler:
    """Decodes pickled Python payloads, resolving globals only from the fixed safe set
    (``SAFE_GLOBALS``) and from ``modules``: a global ``m.name`` of a configured module
    ``m`` (or a submodule of it) is allowed when ``name`` is a plain identifier naming a
    class or function at module level whose own ``__module__`` is also inside a
    configured module (so ``myapp.models`` importing ``os.system`` does not expose it).
    Anything else raises PayloadRefused, naming the global, before any of the payload's
    code runs (a name missing from a configured module raises ImportError or
    AttributeError, as pickle does). Configuring a module trusts every class and function it defines: a peer's
    payload may call them with arguments of its choosing.

    >>> import os, pickle
    >>> u = SafeUnpickler(["numpy"])
    >>> u.loads(pickle.dumps({1, 2}))
    {1, 2}
    >>> u.loads(pickle.dumps(os.system))
    Traceback (most recent call last):
    PayloadRefused: Python payload refused: it names posix.system, ...
    """

    def __init__(self, modules: _Iterable[str] = ()) -> None:
        if isinstance(modules, str):
            raise TypeError("python_payloads (SafeUnpickler) takes a list of module names, not a str")
        mods = tuple(modules)
        for m in mods:
            if not isinstance(m, str) or not m or not all(p.isidentifier() for p in m.split(".")):
                raise ValueError("python_payloads: %r is not a module name" % (m,))
        self.modules = mods
        self._prefixes = tuple(m + "." for m in mods)
        self._cache: _Dict[_Tuple[str, str], _Any] = _safe_globals()

    def _configured(self, module: str) -> bool:
        return module in self.modules or module.startswith(self._prefixes)

    def _refuse(self, module: str, name: str, why: str) -> PayloadRefused:
        return PayloadRefused("Python payload refused: it names %s.%s, %s (allowed: the safe set%s)"
                              % (module, name, why,
                                 "".join(", " + m for m in self.modules)))

    def find_class(self, module: str, name: str) -> _Any:
        """The object a pickle's global ``module.name`` stands for, or PayloadRefused."""
        obj = self._cache.get((module, name))
        if obj is not None:
            return obj
        if not self._configured(module):
            raise self._refuse(module, name, "which is not in python_payloads")
        if not name.isidentifier():
            raise self._refuse(module, name, "which is not a module-level name")
        mod = _importlib.import_module(module)   # allowed, but maybe missing: ImportError
        if name not in mod.__dict__:
            raise AttributeError("module %s has no attribute %s" % (module, name))
        obj = mod.__dict__[name]
        if isinstance(obj, _types.ModuleType) or not callable(obj):
            raise self._refuse(module, name, "which is not a class or function of that module")
        home = getattr(obj, "__module__", None)
        if not isinstance(home, str) or not self._configured(home):
            raise self._refuse(module, name, "which that module imported from %s" % (home,))
        if len(self._cache) < 4096:
            self._cache[(module, name)] = obj
        return obj

    def loads(self, data: _Any, buffers: _Optional[_List[_Any]] = None) -> _Any:
        """Unpickle ``data`` (bytes-like; ``buffers``: out-of-band buffers of protocol 5)."""
        u = _Unpickler(_io.BytesIO(data), buffers=buffers)
        u.policy = self
        return u.load()


def no_pickles(data: _Any, buffers: _Optional[_List[_Any]] = None) -> _Any:
    """The ``loads`` of a connection without Python payloads: refuses every pickle."""
    raise PayloadRefused("Python payload refused: this node does not accept pickled values "
                         "(python_payloads is off)")


__all__ += ["PayloadRefused", "SafeUnpickler", "SAFE_GLOBALS", "no_pickles"]
