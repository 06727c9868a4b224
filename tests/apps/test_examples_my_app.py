"""examples/my_app: MyApp.Application started in-process with its TOML configuration."""
import shutil
import sys
from pathlib import Path

import pytest

import pyotp
from pyotp import GenServer
from pyotp.application import Application
from pyotp.config import configure, reload_config
from pyotp.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.my_app import application as my_app  # noqa: E402
from examples.my_app.application import MyApp  # noqa: E402

CONFIG = ROOT / "examples" / "my_app" / "config" / "config.toml"


def run_app(env, body, config=CONFIG):
    async def main():
        configure(config, env=env, environ={})
        started = await Application.ensure_all_started(MyApp)
        try:
            return started, await body()
        finally:
            await Application.stop_all()
    return pyotp.run(main)


def test_test_environment_values_reach_the_workers():
    async def body():
        return (await my_app.greet("Ada"), await my_app.count(), await my_app.metrics(),
                Application.started_applications())

    started, (greeting, n, metrics, running) = run_app("test", body)
    assert started == ["metrics", "my_app"]
    assert greeting == "Hello from test, Ada!"
    assert n == 43                                   # counter_start = 42, plus one greeting
    assert metrics == {}                             # [metrics] enabled = false in test.toml
    assert running[-2:] == ["metrics", "my_app"]


def test_prod_and_dev_overlays():
    async def body():
        return await my_app.greet("Bartholomew-the-Magnificent"), await my_app.count(), \
            await my_app.metrics()

    _, (greeting, n, metrics) = run_app("prod", body)
    assert greeting == "Welcome, Bartholomew-the-Magn!"   # limits.max_name_length = 20
    assert n == 101
    assert metrics == {"greeting": 1}
    _, (greeting, n, _m) = run_app("dev", body)
    assert greeting == "Hello from dev, Bartholomew-the-Magnificent!"
    assert n == 1


def test_a_restarted_worker_reads_the_configuration_again():
    async def body():
        GenServer.cast(my_app.COUNTER, "increment")
        before = await my_app.count()
        counter = pyotp.whereis(my_app.COUNTER)
        pyotp.exit(counter, "kill")
        # The supervisor handles the EXIT before this call (messages are in order).
        children = await Supervisor.which_children("my_app.supervisor")
        restarted = pyotp.whereis(my_app.COUNTER)
        return before, restarted not in (None, counter), len(children), await my_app.count()

    _, (before, restarted, n_children, after) = run_app("test", body)
    assert (before, restarted, n_children, after) == (43, True, 2, 42)


def test_reload_changes_the_greeting_in_place(tmp_path):
    conf = tmp_path / "config"
    shutil.copytree(CONFIG.parent, conf)

    async def body():
        greeter = pyotp.whereis(my_app.GREETER)
        before = await my_app.greet("Ada")
        (conf / "test.toml").write_text(
            (conf / "test.toml").read_text().replace('"Hello from test"', '"Ahoy"'))
        changes = await reload_config()
        return before, changes, await my_app.greet("Ada"), pyotp.whereis(my_app.GREETER) == greeter

    _, (before, changes, after, same_pid) = run_app("test", body, config=conf / "config.toml")
    assert before == "Hello from test, Ada!"
    assert changes == {"my_app": ({"greeting": "Ahoy"}, {}, [])}
    assert after == "Ahoy, Ada!" and same_pid


@pytest.mark.pyotp
async def test_stop_order_and_workers_gone():
    configure(CONFIG, env="test", environ={})
    await Application.ensure_all_started(MyApp)
    sup = pyotp.whereis("my_app.supervisor")
    stopped = await Application.stop_all()
    sup_alive = pyotp.is_alive(sup)
    counter = pyotp.whereis(my_app.COUNTER)
    metrics = pyotp.whereis(my_app.METRICS)
    assert stopped[:2] == ["my_app", "metrics"]
    assert (sup_alive, counter, metrics) == (False, None, None)


def test_bad_configuration_fails_the_start():
    async def main():
        configure(CONFIG, env="test", environ={})
        Application.put_env("my_app", "counter_start", "many")
        try:
            await Application.ensure_all_started(MyApp)
        except pyotp.StartError as e:
            return e.app, Application.started_applications()

    app, running = pyotp.run(main)
    assert app == "my_app"
    assert "my_app" not in running and "metrics" not in running
