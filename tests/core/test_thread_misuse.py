"""Other OS threads run while a process step is in progress (the GIL switches), but they
are not that process: whatever they call must not act as it (its mailbox has a single
consumer, the loop thread), and what only the loop thread may touch (timer wheel, process
table, mailboxes) refuses them with a clear error."""
import threading

import pyotp
from pyotp import CallbackError, GenServer


def test_another_thread_never_acts_as_the_running_process():
    results = {}
    go = threading.Event()
    done = threading.Event()

    def other_thread(pid):
        go.wait(10)
        for name, fn in [
            ("self", pyotp.self),
            ("receive", lambda: pyotp.receive()),
            ("link", lambda: pyotp.link(pid)),
            ("process_flag", lambda: pyotp.process_flag("trap_exit", True)),
            ("call", lambda: GenServer.call(pid, "x")),
            ("process_info", lambda: pyotp.process_info(pid)),
            ("processes", pyotp.processes),
            ("send_after", lambda: pyotp.send_after(pid, "late", 1)),
        ]:
            try:
                r = fn()
                close = getattr(r, "close", None)
                if close is not None:
                    close()
                results[name] = "returned %r" % (r,)
            except (CallbackError, RuntimeError) as e:
                results[name] = type(e).__name__
        done.set()

    async def main():
        me = pyotp.self()
        pyotp.send(me, "mine")
        t = threading.Thread(target=other_thread, args=(me,))
        t.start()
        go.set()
        done.wait(10)             # the loop thread stays inside this process step
        t.join(10)
        return await pyotp.receive(timeout=1), pyotp.process_info(me)["trap_exit"]

    assert pyotp.run(main, use_uvloop=False) == ("mine", False)
    assert results == {"self": "CallbackError", "receive": "CallbackError",
                       "link": "CallbackError", "process_flag": "CallbackError",
                       "call": "RuntimeError", "process_info": "RuntimeError",
                       "processes": "RuntimeError", "send_after": "RuntimeError"}
