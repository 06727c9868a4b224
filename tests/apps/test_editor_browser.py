"""The editor in a real headless browser (Debian's chromium + chromium-driver, through
Selenium): three pages type at the same time and end with the same text, the server's;
the page's OT agrees with the Python one; a screenshot of the page is saved."""
from __future__ import annotations

import os
import random
import shutil
import threading
from pathlib import Path

import pytest

from editor_helpers import EditorProc, wait_for
from examples.editor.ot import apply, transform

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from services import executable  # noqa: E402

CHROMEDRIVER = executable("chromium", "chromedriver")
CHROMIUM = executable("chromium", "chromium")
# without chromium/chromedriver: skipped with the reason, or failed where required (conftest)
pytestmark = pytest.mark.chromium


def browser():
    o = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1000,620"):
        o.add_argument(a)
    o.binary_location = CHROMIUM
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    e = EditorProc(tmp_path_factory.mktemp("editor") / "docs.db").ready()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def browsers():
    drivers = []
    try:
        for _ in range(3):
            drivers.append(browser())
        yield drivers
    finally:
        for d in drivers:
            d.quit()


def state(d):
    return d.execute_script("return window.editor.state()")


def is_subsequence(small, big):
    it = iter(big)
    return all(c in it for c in small)


def test_three_browsers_typing_at_once_converge_on_the_servers_text(editor, browsers, tmp_path):
    names = ["ann", "bob", "cy"]
    for d, n in zip(browsers, names):
        d.get("%s/doc/race?name=%s" % (editor.url, n))
    for d in browsers:
        wait_for(lambda: state(d)["joined"], "page joined")
    # everyone sees the two others (presence through PubSub)
    for d in browsers:
        wait_for(lambda: len(state(d)["peers"]) == 2, "presence of the two others")
    typed = {"ann": "abcdefghijklmnopqrst", "bob": "ABCDEFGHIJKLMNOPQRST", "cy": "0123456789!?+-*/=<>%"}
    start = threading.Barrier(3)
    errors = []

    def type_in(d, text):
        try:
            area = d.find_element(By.ID, "text")
            area.click()
            start.wait()
            for k in range(0, len(text), 2):     # two keys at a time, all three at once
                area.send_keys(text[k:k + 2])
        except Exception as e:        # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=type_in, args=(d, typed[n])) for d, n in zip(browsers, names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors

    def converged():
        states = [state(d) for d in browsers]
        if any(s["pending"] for s in states):
            return None
        server = editor.doc("race")
        if all(s["text"] == server["text"] and s["rev"] == server["rev"] for s in states):
            return server
        return None
    server = wait_for(converged, "the three pages to converge")
    text = server["text"]
    assert sorted(text) == sorted("".join(typed.values()))
    for n in names:                   # each person's keystrokes kept their order
        assert is_subsequence(typed[n], text)
    # the page's presence shows every caret; keep a picture of it
    shot = tmp_path / "editor.png"
    browsers[0].save_screenshot(str(shot))
    assert shot.stat().st_size > 1000
    target = os.environ.get("EDITOR_SCREENSHOT")
    if target:
        shutil.copy(shot, target)


def test_the_pages_ot_agrees_with_the_python_one(editor, browsers):
    rnd = random.Random(23)
    cases = []
    for _ in range(300):
        text = "".join(rnd.choice("ab\u00e9\U0001F600") for _ in range(rnd.randint(0, 8)))

        def op(t):
            ops = []
            for _ in range(rnd.randint(1, 3)):
                if t and rnd.random() < .5:
                    p = rnd.randrange(len(t))
                    ops.append(["d", p, rnd.randint(1, len(t) - p)])
                else:
                    ops.append(["i", rnd.randint(0, len(t)), rnd.choice(["x", "\U0001F600y", "zz"])])
                t = apply(t, ops[-1:])
            return ops
        cases.append([text, op(text), op(text), rnd.random() < .5])
    d = browsers[0]
    d.get(editor.url + "/doc/ot-check")
    wait_for(lambda: state(d)["joined"], "page joined")
    got = d.execute_script("""
        return arguments[0].map(([t, a, b, f]) => {
          const [a2, b2] = OT.transform(a, b, f);
          return [a2, b2, OT.apply(OT.apply(t, a), b2)];
        });""", cases)
    want = []
    for t, a, b, f in cases:
        a2, b2 = transform(a, b, f)
        want.append([a2, b2, apply(apply(t, a), b2)])
    assert got == want
