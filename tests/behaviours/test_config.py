"""pyotp.config: TOML reading and errors, overlays, import_config, overrides, configure and
reload_config with config_change."""
import logging
import textwrap

import pytest

import pyotp
from pyotp import GenServer
from pyotp.application import Application
from pyotp.config import (ConfigError, config_env, configure, current_env, deep_merge,
                          env_overrides, load_config, read_toml, reload_config)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cfgdir(tmp_path):
    d = tmp_path / "config"
    write(d / "config.toml", """
        [tc_app]
        greeting = "Hello"
        port = 4000
        [tc_app.db]
        host = "localhost"
        pool = 5
        [tc_other]
        flag = true
        """)
    write(d / "dev.toml", """
        [tc_app]
        greeting = "Hello from dev"
        """)
    write(d / "prod.toml", """
        [tc_app]
        port = 80
        [tc_app.db]
        host = "db.internal"
        """)
    return d


# ---------------------------------------------------------------------------------------
# Reading files

def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found") as ei:
        read_toml(tmp_path / "nope.toml")
    assert ei.value.path.endswith("nope.toml")


def test_invalid_toml_reports_line(tmp_path):
    p = write(tmp_path / "bad.toml", """\
        [a]
        x = 1
        y = = 2
        """)
    with pytest.raises(ConfigError) as ei:
        read_toml(p)
    assert ei.value.line == 3
    assert str(ei.value).startswith(str(p) + ":3: invalid TOML:")


def test_invalid_utf8_reports_line(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'[a]\nx = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8") as ei:
        read_toml(p)
    assert ei.value.line == 2


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        read_toml(tmp_path)


def test_top_level_values_must_be_application_tables(tmp_path):
    p = write(tmp_path / "config.toml", 'port = 4000\n')
    with pytest.raises(ConfigError, match=r"top-level key 'port' must be a table"):
        load_config(p, env="dev")


# ---------------------------------------------------------------------------------------
# Overlays and environment selection

def test_env_overlay_is_deep_merged(cfgdir):
    prod = load_config(cfgdir / "config.toml", env="prod", environ={})
    assert prod["tc_app"] == {"greeting": "Hello", "port": 80,
                              "db": {"host": "db.internal", "pool": 5}}
    assert prod["tc_other"] == {"flag": True}
    dev = load_config(cfgdir / "config.toml", env="dev", environ={})
    assert dev["tc_app"]["greeting"] == "Hello from dev" and dev["tc_app"]["port"] == 4000


def test_missing_env_file_is_not_an_error(cfgdir):
    cfg = load_config(cfgdir / "config.toml", env="staging", environ={})
    assert cfg["tc_app"]["greeting"] == "Hello"


def test_env_from_variable_default_dev(cfgdir):
    assert current_env({}) == "dev"
    assert current_env({"PYOTP_ENV": "prod"}) == "prod"
    assert load_config(cfgdir / "config.toml", environ={"PYOTP_ENV": "prod"})["tc_app"]["port"] == 80
    assert load_config(cfgdir / "config.toml", environ={})["tc_app"]["greeting"] == "Hello from dev"


def test_invalid_env_name(cfgdir):
    with pytest.raises(ConfigError, match="invalid environment name '../x'"):
        load_config(cfgdir / "config.toml", env="../x")
    with pytest.raises(ConfigError, match="invalid environment name"):
        current_env({"PYOTP_ENV": "a/b"})


def test_invalid_overlay_reports_the_overlay_file(cfgdir):
    write(cfgdir / "broken.toml", "[tc_app\n")
    with pytest.raises(ConfigError) as ei:
        load_config(cfgdir / "config.toml", env="broken")
    assert ei.value.path.endswith("broken.toml") and ei.value.line == 1


def test_import_config_replaces_the_convention(tmp_path):
    d = tmp_path / "conf"
    write(d / "base.toml", """
        import_config = ["common.toml", "env/{env}.toml"]
        [tc_imp]
        a = 1
        b = 1
        c = 1
        """)
    write(d / "common.toml", """
        [tc_imp]
        b = 2
        c = 2
        """)
    write(d / "env" / "prod.toml", """
        import_config = "../last.toml"
        [tc_imp]
        c = 3
        """)
    write(d / "last.toml", """
        [tc_imp]
        d = 4
        """)
    write(d / "prod.toml", """
        [tc_imp]
        a = 999
        """)                                     # not read: import_config is present
    assert load_config(d / "base.toml", env="prod", environ={}) == {
        "tc_imp": {"a": 1, "b": 2, "c": 3, "d": 4}}


def test_import_config_errors(tmp_path):
    write(tmp_path / "a.toml", 'import_config = "missing_{env}.toml"\n')
    with pytest.raises(ConfigError, match=r"import_config: .*missing_dev.toml not found"):
        load_config(tmp_path / "a.toml", env="dev")
    write(tmp_path / "b.toml", 'import_config = "c.toml"\n')
    write(tmp_path / "c.toml", 'import_config = "b.toml"\n')
    with pytest.raises(ConfigError, match="import_config cycle"):
        load_config(tmp_path / "b.toml", env="dev")
    write(tmp_path / "d.toml", 'import_config = 3\n')
    with pytest.raises(ConfigError, match="must be a string or a list of strings"):
        load_config(tmp_path / "d.toml", env="dev")


def test_deep_merge_does_not_mutate():
    base = {"a": {"x": 1, "y": {"z": 1}}, "b": [1]}
    out = deep_merge(base, {"a": {"y": {"w": 2}}, "b": [2], "c": 3})
    assert out == {"a": {"x": 1, "y": {"z": 1, "w": 2}}, "b": [2], "c": 3}
    assert base == {"a": {"x": 1, "y": {"z": 1}}, "b": [1]}
    assert deep_merge({"a": {"x": 1}}, {"a": 5}) == {"a": 5}


def test_environment_variable_overrides(cfgdir):
    environ = {"PYOTP_CONFIG__TC_APP__DB__POOL": "20",
               "PYOTP_CONFIG__TC_APP__GREETING": "Howdy",
               "PYOTP_CONFIG__TC_APP__TAGS": '["a", "b"]',
               "PYOTP_CONFIG__TC_NEW__ON": "true",
               "UNRELATED": "x"}
    assert env_overrides(environ) == {"tc_app": {"db": {"pool": 20}, "greeting": "Howdy",
                                                 "tags": ["a", "b"]},
                                      "tc_new": {"on": True}}
    cfg = load_config(cfgdir / "config.toml", env="prod", environ=environ)
    assert cfg["tc_app"]["db"] == {"host": "db.internal", "pool": 20}
    assert cfg["tc_app"]["greeting"] == "Howdy"
    assert load_config(cfgdir / "config.toml", env="prod", environ=environ,
                       overrides=False)["tc_app"]["greeting"] == "Hello"
    with pytest.raises(ConfigError, match="must look like PYOTP_CONFIG__<APP>__<KEY>"):
        env_overrides({"PYOTP_CONFIG__ONLYAPP": "1"})


# ---------------------------------------------------------------------------------------
# configure and reload_config

def test_configure_puts_env_and_remembers_env(cfgdir, monkeypatch):
    monkeypatch.delenv("PYOTP_ENV", raising=False)
    cfg = configure(cfgdir / "config.toml", env="prod")
    assert cfg["tc_app"]["port"] == 80
    assert Application.get_env("tc_app", "port") == 80
    assert Application.get_env("tc_app", "db") == {"host": "db.internal", "pool": 5}
    assert config_env() == "prod"


class Watched(GenServer):
    def init(self, arg):
        return ("ok", arg)


class ReloadApp(Application):
    name = "tc_reload"
    env = {"from_default": "d", "greeting": "default greeting"}

    async def start(self, start_type, args):
        return await Watched.start_link(None)

    def config_change(self, changed, new, removed):
        pyotp.send("tc_reload_test", ("config_change", self.name, changed, new, removed))
        return "ok"


class QuietApp(ReloadApp):
    name = "tc_quiet"
    env = {}


class RaisingApp(ReloadApp):
    name = "tc_raising"
    env = {}

    def config_change(self, changed, new, removed):
        raise RuntimeError("cannot change")


def test_reload_config_calls_config_change_with_the_differences(tmp_path, caplog):
    d = tmp_path / "config"
    write(d / "config.toml", """
        [tc_reload]
        greeting = "Hello"
        port = 4000
        gone = "soon"
        [tc_quiet]
        same = 1
        [tc_raising]
        x = 1
        """)
    write(d / "test.toml", "")

    async def main():
        pyotp.register("tc_reload_test", pyotp.self())
        configure(d / "config.toml", env="test", environ={})
        await Application.ensure_all_started([ReloadApp, QuietApp, RaisingApp])
        before = Application.get_all_env("tc_reload")
        write(d / "test.toml", """
            [tc_reload]
            greeting = "Hi"
            fresh = [1, 2]
            [tc_raising]
            x = 2
            """)
        write(d / "config.toml", """
            [tc_reload]
            greeting = "Hello"
            port = 4000
            [tc_quiet]
            same = 1
            [tc_raising]
            x = 1
            """)
        result = await reload_config(environ={})
        msgs = []
        while True:
            try:
                msgs.append(await pyotp.receive(timeout=0))
            except TimeoutError:
                break
        after = Application.get_all_env("tc_reload")
        await Application.stop_all()
        return before, result, msgs, after

    with caplog.at_level(logging.CRITICAL, logger="pyotp"):
        before, result, msgs, after = pyotp.run(main)
    assert before == {"from_default": "d", "greeting": "Hello", "port": 4000, "gone": "soon"}
    assert after == {"from_default": "d", "greeting": "Hi", "port": 4000, "fresh": [1, 2]}
    assert msgs == [("config_change", "tc_reload", {"greeting": "Hi"}, {"fresh": [1, 2]}, ["gone"])]
    assert result == {"tc_reload": ({"greeting": "Hi"}, {"fresh": [1, 2]}, ["gone"]),
                      "tc_raising": ({"x": 2}, {}, [])}


def test_reload_config_without_configure_or_with_a_broken_file(tmp_path):
    import pyotp.config as c
    saved = dict(c._last)
    try:
        c._last["path"] = None
        with pytest.raises(ConfigError, match="no path given"):
            pyotp.run(reload_config)
    finally:
        c._last.update(saved)
    write(tmp_path / "config.toml", "[tc_broken]\nx = \n")

    async def main():
        try:
            await reload_config(tmp_path / "config.toml", env="dev")
        except ConfigError as e:
            return e.line
    assert pyotp.run(main) == 2
