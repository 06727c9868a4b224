"""Configuration: the application environment from TOML files, with per-environment
overlays, like Elixir's ``config/config.exs`` + ``config/dev.exs``.

A configuration file has one table per application; nested tables are nested dicts::

    # config/config.toml
    [my_app]
    greeting = "Hello"
    counter_start = 0

    [my_app.http]          # Application.get_env("my_app", "http") == {"port": 4000, ...}
    port = 4000
    host = "127.0.0.1"

**Environment selection.** The environment name comes from the ``env`` argument (the
``--env`` option of ``python -m pyotp run``), else the ``PYOTP_ENV`` environment variable,
else ``"dev"``. Names are letters, digits, ``_`` and ``-``.

**Overlay rule.** ``load_config(path, env)`` reads ``path``; then

* if the file has a top-level ``import_config`` key (a string or a list of strings,
  relative to the file's directory, ``{env}`` replaced by the environment name), those
  files are read in order and each is deep-merged over what came before (imports may
  import in turn; a missing imported file is an error, as Elixir's ``import_config``);
* otherwise, if ``<directory of path>/<env>.toml`` exists, it is deep-merged over the
  base (the conventional ``config/config.toml`` + ``config/prod.toml``). A missing
  environment file is not an error.

*Deep-merged* means tables merge key by key, recursively; any other value (numbers,
strings, arrays) in the later file replaces the earlier one.

**Runtime overrides.** Last, environment variables ``PYOTP_CONFIG__<APP>__<KEY>[__<SUB>...]``
set single values (names are lower-cased; ``PYOTP_CONFIG__MY_APP__HTTP__PORT=8080`` sets
``my_app.http.port``). The value is read as a TOML value when it is one (``8080``,
``true``, ``"x"``, ``[1, 2]``) and as a plain string otherwise.

**Applying and reloading.** ``configure(path, env)`` loads the files and puts every
key into the application environment (configured values win over an application's
default ``env``). ``await reload_config()`` reads the files again, replaces the
environment of every configured or loaded application with its defaults plus the new
configuration (values set at runtime with ``put_env`` for those applications are
dropped, as in OTP), and calls ``config_change(changed, new, removed)`` on each running
application whose environment changed.

>>> cfg = load_config("examples/my_app/config/config.toml", env="test")
>>> cfg["my_app"]["greeting"]
'Hello from test'
>>> _ = configure("examples/my_app/config/config.toml", env="prod")
>>> Application.get_env("my_app", "counter_start")
100
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

from . import application as _app

__all__ = ["ConfigError", "ENV_VAR", "DEFAULT_ENV", "OVERRIDE_PREFIX", "current_env",
           "config_env", "read_toml", "deep_merge", "env_overrides", "load_config",
           "configure", "reload_config"]

ENV_VAR = "PYOTP_ENV"
DEFAULT_ENV = "dev"
OVERRIDE_PREFIX = "PYOTP_CONFIG__"
IMPORT_KEY = "import_config"

PathLike = Union[str, "os.PathLike[str]"]
Config = Dict[str, Dict[str, Any]]

_ENV_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid. ``path`` and ``line`` (when
    known) locate the problem; ``str(e)`` reads ``path:line: message``.

    >>> load_config("missing.toml")
    Traceback (most recent call last):
    ConfigError: missing.toml: configuration file not found
    """

    def __init__(self, path: Optional[PathLike], message: str, line: Optional[int] = None) -> None:
        Exception.__init__(self, message)
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = self.path or "<config>"
        if self.line is not None:
            where = "%s:%d" % (where, self.line)
        return "%s: %s" % (where, self.message)


_last: Dict[str, Any] = {"path": None, "env": None}
_configured: Set[str] = set()


def current_env(environ: Optional[Mapping[str, str]] = None) -> str:
    """The environment selected by ``PYOTP_ENV`` (default ``"dev"``).

    >>> current_env({"PYOTP_ENV": "prod"})
    'prod'
    """
    env = (os.environ if environ is None else environ).get(ENV_VAR) or DEFAULT_ENV
    return _check_env(env)


def config_env() -> str:
    """The environment of the last ``configure`` (else ``current_env()``), as Elixir's
    ``config_env()``.

    >>> config_env()
    'dev'
    """
    return _last["env"] or current_env()


def _check_env(env: Any) -> str:
    if not isinstance(env, str) or not _ENV_NAME.match(env):
        raise ConfigError(None, "invalid environment name %r (use letters, digits, '_' and '-')"
                          % (env,))
    return env


def read_toml(path: PathLike) -> Dict[str, Any]:
    """Parse one TOML file; ConfigError (with the line number for syntax errors) when it
    is missing, unreadable or invalid.

    >>> read_toml("examples/my_app/config/config.toml")["my_app"]["greeting"]
    'Hello'
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "configuration file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, "is a directory, not a configuration file") from None
    except OSError as e:
        raise ConfigError(path, "cannot read configuration file: %s" % (e.strerror or e)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(path, "not valid UTF-8", line) from None
    try:
        parsed: Dict[str, Any] = tomllib.loads(text)
        return parsed
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where: Optional[int] = int(m.group(1)) if m else getattr(e, "lineno", None)
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg) if m else msg
        if m:
            msg = "%s (column %s)" % (msg, m.group(2))
        raise ConfigError(path, "invalid TOML: %s" % msg, where) from None


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    """``over`` merged into a copy of ``base``: tables merge recursively, other values are
    replaced.

    >>> deep_merge({"a": {"x": 1, "y": 2}, "b": [1]}, {"a": {"y": 3}, "b": [2]})
    {'a': {'x': 1, 'y': 3}, 'b': [2]}
    """
    out: Dict[str, Any] = dict(base)
    for k, v in over.items():
        old = out.get(k)
        if isinstance(old, Mapping) and isinstance(v, Mapping):
            out[k] = deep_merge(old, v)
        else:
            out[k] = v
    return out


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads("v = " + raw)["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Optional[Mapping[str, str]] = None) -> Config:
    """The configuration given by ``PYOTP_CONFIG__APP__KEY[__SUB...]`` variables.

    >>> env_overrides({"PYOTP_CONFIG__MY_APP__HTTP__PORT": "8080"})
    {'my_app': {'http': {'port': 8080}}}
    """
    env = os.environ if environ is None else environ
    out: Dict[str, Any] = {}
    for var in sorted(env):
        if not var.upper().startswith(OVERRIDE_PREFIX):
            continue
        parts = [p.lower() for p in var[len(OVERRIDE_PREFIX):].split("__")]
        if len(parts) < 2 or not all(parts):
            raise ConfigError(None, "environment variable %s must look like "
                              "%s<APP>__<KEY>[__<SUBKEY>...]" % (var, OVERRIDE_PREFIX))
        node: Dict[str, Any] = {}
        leaf = node
        for p in parts[:-1]:
            leaf[p] = {}
            leaf = leaf[p]
        leaf[parts[-1]] = _parse_value(env[var])
        out = deep_merge(out, node)
    return out


def _check_tables(path: PathLike, data: Mapping[str, Any]) -> None:
    for k, v in data.items():
        if k == IMPORT_KEY:
            continue
        if not isinstance(v, Mapping):
            raise ConfigError(path, "top-level key %r must be a table of an application "
                              "([%s]), found %s" % (k, k, type(v).__name__))


def _imports(path: Path, data: Mapping[str, Any], env: str) -> List[Path]:
    spec = data.get(IMPORT_KEY)
    items = [spec] if isinstance(spec, str) else spec
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ConfigError(path, "%s must be a string or a list of strings, found %r"
                          % (IMPORT_KEY, spec))
    return [path.parent / x.replace("{env}", env) for x in items]


def _load_file(path: Path, env: str, seen: Tuple[Path, ...]) -> Dict[str, Any]:
    real = path.resolve()
    if real in seen:
        chain = " -> ".join(str(p) for p in seen + (real,))
        raise ConfigError(path, "import_config cycle: %s" % chain)
    data = read_toml(path)
    _check_tables(path, data)
    if IMPORT_KEY not in data:
        return data
    merged = {k: v for k, v in data.items() if k != IMPORT_KEY}
    for imp in _imports(path, data, env):
        if not imp.exists():
            raise ConfigError(path, "import_config: %s not found" % imp)
        merged = deep_merge(merged, _load_file(imp, env, seen + (real,)))
    return merged


def load_config(path: PathLike, env: Optional[str] = None, *,
                environ: Optional[Mapping[str, str]] = None, overrides: bool = True) -> Config:
    """Read ``path`` with its environment overlay and ``PYOTP_CONFIG__...`` overrides
    (module doc); returns ``{app: {key: value}}``. ``environ`` replaces ``os.environ``
    for selecting the environment and the overrides.

    >>> load_config("examples/my_app/config/config.toml", env="prod")["my_app"]["counter_start"]
    100
    """
    env = _check_env(env) if env is not None else current_env(environ)
    p = Path(path)
    data = read_toml(p)
    _check_tables(p, data)
    if IMPORT_KEY in data:
        cfg = _load_file(p, env, ())
    else:
        cfg = data
        overlay = p.parent / ("%s.toml" % env)
        if overlay.exists() and overlay.resolve() != p.resolve():
            extra = read_toml(overlay)
            _check_tables(overlay, extra)
            if IMPORT_KEY in extra:
                raise ConfigError(overlay, "%s is only read from the file given to "
                                  "load_config" % IMPORT_KEY)
            cfg = deep_merge(cfg, extra)
    if overrides:
        cfg = deep_merge(cfg, env_overrides(environ))
    return {str(k): dict(v) for k, v in cfg.items()}


def configure(path: PathLike, env: Optional[str] = None, *,
              environ: Optional[Mapping[str, str]] = None) -> Config:
    """Load the configuration and put it into the application environment (configured
    keys replace current values); remembered for ``reload_config()``. Returns it.

    >>> configure("examples/my_app/config/config.toml", env="test")["my_app"]["counter_start"]
    42
    """
    env = _check_env(env) if env is not None else current_env(environ)
    cfg = load_config(path, env, environ=environ)
    _app.Application.put_all_env(cfg)
    _last["path"], _last["env"] = os.fspath(path), env
    _configured.update(cfg)
    return cfg


async def reload_config(path: Optional[PathLike] = None, env: Optional[str] = None, *,
                        environ: Optional[Mapping[str, str]] = None
                        ) -> Dict[str, Tuple[Dict[str, Any], Dict[str, Any], List[str]]]:
    """Read the configuration again (by default the files of the last ``configure``),
    replace the environments (module doc) and call ``config_change(changed, new,
    removed)`` on each running application whose environment changed, as OTP does after
    a release upgrade. Returns ``{app: (changed, new, removed)}`` for those applications.
    A ``config_change`` that raises is logged; the others still run.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "config.toml"
    >>> _ = path.write_text('[my_app]\\ngreeting = "Hi"\\n')
    >>> _ = configure(path)
    >>> await Application.ensure_all_started(MyApp)
    ['metrics', 'my_app']
    >>> _ = path.write_text('[my_app]\\ngreeting = "Hi again"\\n')
    >>> await reload_config()
    {'my_app': ({'greeting': 'Hi again'}, {}, [])}
    >>> path.unlink(); path.parent.rmdir()
    """
    if path is None:
        path = _last["path"]
        if path is None:
            raise ConfigError(None, "reload_config: no path given and configure() was never called")
    if env is None:
        env = _last["env"] or current_env(environ)
    env = _check_env(env)
    cfg = load_config(path, env, environ=environ)
    defaults = _app._defaults_of_loaded()
    names = set(defaults) | set(cfg) | _configured
    new_envs: Dict[str, Dict[Any, Any]] = {}
    for n in names:
        e = dict(defaults.get(n, {}))
        e.update(cfg.get(n, {}))
        new_envs[n] = e
    old_envs = _app._replace_envs(new_envs)
    _last["path"], _last["env"] = os.fspath(path), env
    _configured.clear()
    _configured.update(cfg)

    async def notify() -> Dict[str, Tuple[Dict[str, Any], Dict[str, Any], List[str]]]:
        out: Dict[str, Tuple[Dict[str, Any], Dict[str, Any], List[str]]] = {}
        for n in _app._running_names():
            if n not in new_envs:
                continue
            old, new_env = old_envs.get(n, {}), new_envs[n]
            changed = {k: v for k, v in new_env.items() if k in old and old[k] != v}
            added = {k: v for k, v in new_env.items() if k not in old}
            removed = [k for k in old if k not in new_env]
            if changed or added or removed:
                await _app._call_config_change(n, changed, added, removed)
                out[n] = (changed, added, removed)
        return out

    return await _app._as_process(notify)
