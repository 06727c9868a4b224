"""The dashboard in a real headless browser (Debian's chromium + chromium-driver, Selenium):
the page loads, shows the supervision tree, follows the process count, and killing a
worker from the page makes its supervisor restart it (the page shows the new pid); and the
dashboard attached to a real Erlang node (``python -m pyotp dashboard --node``).
The run saves screenshots (dashboard.png, dashboard-process.png, dashboard-beam.png) in a
tmp dir, or in PYOTP_SCREENSHOT_DIR: ``make screenshots`` renews docs/images with them."""
import os
import re
import sys

import pytest

import pyotp
from pyotp import GenServer, Supervisor, dashboard

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from services import executable  # noqa: E402

CHROMEDRIVER = executable("chromium", "chromedriver")
CHROMIUM = executable("chromium", "chromium")
# without chromium/chromedriver: skipped with the reason, or failed where required (conftest)
pytestmark = pytest.mark.chromium


class Worker(GenServer):
    def init(self, arg):
        return ("ok", {"jobs": arg})

    def handle_call(self, req, from_, s):
        return ("reply", s, s)


async def demo():
    inner = {"id": "pool", "type": "supervisor",
             "start": (Supervisor.start_link, [[{"id": "db", "start": (Worker.start_link, [2])}]],
                       {"strategy": "one_for_one"})}
    sup = await Supervisor.start_link([{"id": "worker", "start": (Worker.start_link, [0])}, inner],
                                      strategy="one_for_one")
    pyotp.register("demo_sup", sup)
    return sup


async def idle():
    await pyotp.receive()


@pytest.fixture
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1300"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def _shot(browser, tmp_path, name, element_id=None):
    folder = os.environ.get("PYOTP_SCREENSHOT_DIR") or str(tmp_path)
    if element_id is None:
        browser.execute_script("window.scrollTo(0, 0)")
    else:
        browser.execute_script("document.getElementById(arguments[0]).scrollIntoView()", element_id)
    assert browser.save_screenshot(os.path.join(folder, name))


def test_dashboard_in_browser(browser, tmp_path):
    node = pyotp.Runtime.start_thread()
    try:
        sup = node.call_in_loop(demo)
        d = node.call_in_loop(dashboard.start, 0, "127.0.0.1", None, None, 0.1)
        wait = WebDriverWait(browser, 20, ignored_exceptions=[StaleElementReferenceException])
        browser.get(d.url)
        wait.until(lambda b: b.find_element(By.ID, "status").text == "live")
        wait.until(lambda b: "worker" in b.find_element(By.ID, "trees").text
                   and "db" in b.find_element(By.ID, "trees").text)
        count = int(browser.find_element(By.ID, "proc-count").text)
        for _ in range(3):
            node.spawn(idle)
        wait.until(lambda b: b.find_element(By.ID, "proc-count").text == str(count + 3))

        def worker_pid(b):
            # in one script: the page re-renders the tree at every update
            return b.execute_script(
                "for (const s of document.querySelectorAll('li.tree-node > span.child-id'))"
                " if (s.textContent === 'worker') return s.parentNode.dataset.pid; return null;")
        old = wait.until(worker_pid)
        assert old == str(node.call_in_loop(Supervisor.which_children, sup)[0][1])
        browser.execute_script("document.querySelector('li[data-pid=\"%s\"] > a.pid').click()" % old)
        wait.until(lambda b: "jobs" in b.find_element(By.ID, "p-info").text)
        _shot(browser, tmp_path, "dashboard-process.png", "process")
        browser.find_element(By.ID, "p-kill").click()
        alert = wait.until(lambda b: b.switch_to.alert)
        assert "Kill " + old in alert.text
        alert.accept()
        new = wait.until(lambda b: (worker_pid(b) not in (None, "", old)) and worker_pid(b))
        assert new == str(node.call_in_loop(Supervisor.which_children, sup)[0][1])
        wait.until(lambda b: "restarts: 1" in b.find_element(By.ID, "trees").text)
        _shot(browser, tmp_path, "dashboard.png")
        node.call_in_loop(d.close)
    finally:
        node.stop()


@pytest.mark.erlang
def test_dashboard_of_an_erlang_node_in_browser(browser, tmp_path):
    """Attached to erl: the kernel's supervision tree, the node list with the dashboard's
    own connection and its traffic, BEAM's rate in reductions/s."""
    import pexpect
    from dist_helpers import COOKIE, WAIT, ErlNode, child_env
    from test_observer_beam import TARGET
    with ErlNode("beamweb", TARGET) as erl:
        erl.expect("ready")
        c = pexpect.spawn(sys.executable, ["-m", "pyotp", "dashboard", "--node", erl.name,
                                           "--cookie", COOKIE, "--port", "0"],
                          env=child_env(), encoding="utf-8", timeout=WAIT)
        try:
            c.expect(r"pyotp dashboard: %s on (http://127.0.0.1:\d+/)" % re.escape(erl.name))
            wait = WebDriverWait(browser, 20, ignored_exceptions=[StaleElementReferenceException])
            browser.get(c.match.group(1))
            wait.until(lambda b: b.find_element(By.ID, "status").text == "live")
            wait.until(lambda b: b.find_element(By.ID, "node-name").text == erl.name)
            wait.until(lambda b: "kernel_sup" in b.find_element(By.ID, "trees").text
                       and "logger_sup" in b.find_element(By.ID, "trees").text)
            wait.until(lambda b: "code_server" in b.find_element(By.ID, "top").text)
            nodes = wait.until(lambda b: b.find_element(By.ID, "nodes").text)
            assert "pyotp_cli_" in nodes and "hidden" in nodes
            assert browser.find_element(By.ID, "rate-unit").text == "reductions/s"
            _shot(browser, tmp_path, "dashboard-beam.png")
        finally:
            c.terminate(force=True)


@pytest.mark.erlang
def test_node_list_switches_to_a_connected_erlang_node(browser, tmp_path):
    """The node list of a distributed node: clicking a connected Erlang node shows that
    node (its kernel tree); the first row leads back."""
    from pyotp.dist import Node
    from dist_helpers import COOKIE, ErlNode, unique
    from test_observer_beam import TARGET
    with ErlNode("beamnav", TARGET) as erl:
        erl.expect("ready")
        node = pyotp.Runtime.start_thread()
        try:
            async def up():
                await Node.start(unique("nav"), cookie=COOKIE)
                assert await Node.ping(erl.name) == "pong"
                return await dashboard.start(0, "127.0.0.1", None, None, 0.2)
            d = node.call_in_loop(up)
            home = node.call_in_loop(lambda: str(pyotp.local_node()))
            wait = WebDriverWait(browser, 20, ignored_exceptions=[StaleElementReferenceException])
            browser.get(d.url)
            wait.until(lambda b: b.find_element(By.ID, "node-name").text == home)
            click = ("for (const a of document.querySelectorAll(arguments[0]))"
                     " if (a.textContent === arguments[1]) { a.click(); return true; } return false;")
            wait.until(lambda b: b.execute_script(click, "a.view-node", erl.name))
            wait.until(lambda b: b.find_element(By.ID, "node-name").text == erl.name)
            wait.until(lambda b: "kernel_sup" in b.find_element(By.ID, "trees").text)
            wait.until(lambda b: b.find_element(By.ID, "rate-unit").text == "reductions/s")
            wait.until(lambda b: b.execute_script(click, "a.view-home", "back to the dashboard's node"))
            wait.until(lambda b: b.find_element(By.ID, "node-name").text == home)
            node.call_in_loop(d.close)
            node.call_in_loop(Node.stop)
        finally:
            node.stop()
