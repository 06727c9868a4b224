"""External Term Format codec throughput (terms/s), beside same-run baselines.

    pytest bench/test_bench_etf.py --benchmark-group-by=group [--bench-quick]

Groups ``etf-encode`` and ``etf-decode``. Each round encodes (or decodes) the same term
``n`` times in a plain loop, so the figure includes the Python call of the codec, as the
distribution layer pays it. Two term shapes:

* ``small``: ``(ok, 42, <<"hello">>, [1, 2])``
* ``gen_call``: ``{'$gen_call', {Pid, Ref}, {get, <<"key">>}}`` with a remote pid and ref,
  what a GenServer call from another node looks like.

Implementations:

* ``pyotp``: ``pyotp.etf.term_to_binary`` / ``binary_to_term``; ``pyotp-python`` the same
  with ``python=True`` (identical bytes for these terms), called through a lambda, whose
  call (about 60 ns) is most of the difference.
* ``pickle`` (baseline): ``pickle.dumps`` / ``pickle.loads`` of the same Python value,
  protocol 5.
* ``erlpack`` (baseline, when the ``erlpack`` package is importable): ``erlpack.pack`` /
  ``erlpack.unpack`` of the ``small`` shape with erlpack's own Atom type. erlpack 1.0.1
  can neither encode a pid nor decode NEW_PID_EXT, so it has no ``gen_call`` case. When it
  is missing this is printed and its cases are simply not generated.

The rate (terms/s) is in each result's ``extra_info``. No speed is asserted.
"""
from __future__ import annotations

import pickle
from typing import Any, Callable, Dict, Tuple

import pytest

from bench import workloads as W

from pyotp.etf import Atom, Pid, Reference, binary_to_term, term_to_binary

try:
    import erlpack
except ImportError as exc:        # a baseline only: report it, never skip the others
    erlpack = None
    print("bench/test_bench_etf.py: erlpack not importable (%s): its baseline is not run" % exc)

SIZES = {"quick": 20_000, "full": 200_000}

PID = Pid("peer@host", 85, 0, 1795466371)
REF = Reference("peer@host", 1795466371, (13216, 3689152513, 2744588717))

TERMS: Dict[str, Any] = {
    "small": (Atom("ok"), 42, b"hello", [1, 2]),
    "gen_call": (Atom("$gen_call"), (PID, REF), (Atom("get"), b"key")),
}


def _erlpack_terms() -> Dict[str, Any]:
    assert erlpack is not None
    return {"small": (erlpack.Atom("ok"), 42, b"hello", [1, 2])}


def _codecs() -> Dict[str, Tuple[Callable[[Any], bytes], Callable[[bytes], Any], Dict[str, Any]]]:
    c: Dict[str, Tuple[Callable[[Any], bytes], Callable[[bytes], Any], Dict[str, Any]]] = {
        "pyotp": (term_to_binary, binary_to_term, TERMS),
        # lambdas, not functools.partial: a partial with keywords builds a dict per call
        "pyotp-python": (lambda t: term_to_binary(t, python=True),
                         lambda b: binary_to_term(b, python=True), TERMS),
        "pickle": (lambda t: pickle.dumps(t, 5), pickle.loads, TERMS),
    }
    if erlpack is not None:
        c["erlpack"] = (erlpack.pack, erlpack.unpack, _erlpack_terms())
    return c


CODECS = _codecs()
CASES = [(shape, impl) for shape in TERMS for impl in CODECS if shape in CODECS[impl][2]]


def _run(benchmark: Any, group: str, impl: str, shape: str, mode: str, round_fn: Callable[[], None],
         n: int) -> None:
    m = W.MODES[mode]
    benchmark.group = group
    benchmark.pedantic(round_fn, rounds=m.rounds, warmup_rounds=m.warmup, iterations=1)
    info = {"impl": impl, "shape": shape, "mode": mode, "ops_per_round": n, "unit": "terms/s"}
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        info["rate"] = n / stats.stats.median
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("shape,impl", CASES, ids=["%s-%s" % c for c in CASES])
def test_encode(benchmark: Any, mode: str, shape: str, impl: str) -> None:
    n = SIZES[mode]
    encode, decode, terms = CODECS[impl]
    term = terms[shape]
    W.check(decode(encode(term)) == term, "%s: round trip failed" % impl)

    def round_() -> None:
        for _ in range(n):
            encode(term)
    _run(benchmark, "etf-encode", impl, shape, mode, round_, n)


@pytest.mark.parametrize("shape,impl", CASES, ids=["%s-%s" % c for c in CASES])
def test_decode(benchmark: Any, mode: str, shape: str, impl: str) -> None:
    n = SIZES[mode]
    encode, decode, terms = CODECS[impl]
    data = encode(terms[shape])
    if impl.startswith("pyotp"):
        W.check(data == term_to_binary(terms[shape]), "python mode changed the bytes of a plain term")

    def round_() -> None:
        for _ in range(n):
            decode(data)
    _run(benchmark, "etf-decode", impl, shape, mode, round_, n)
