"""Process aliases (erlang:alias/unalias): messages to an active alias reach its owner,
an unaliased or used-up one drops them; bad use is a clear error."""
import pytest

import pyotp


def test_alias_routes_until_unalias():
    async def main():
        a = pyotp.alias()
        pyotp.send(a, "one")
        first = await pyotp.receive()
        was_active = pyotp.unalias(a)
        again = pyotp.unalias(a)
        pyotp.send(a, "dropped")
        pyotp.send(pyotp.self(), "marker")
        return first, was_active, again, await pyotp.receive()
    assert pyotp.run(main) == ("one", True, False, "marker")


def test_reply_mode_is_one_shot_and_other_processes_cannot_unalias():
    async def main():
        a = pyotp.alias("reply")
        me = pyotp.self()

        async def other():
            pyotp.send(me, ("other_unalias", pyotp.unalias(a)))
            pyotp.send(a, "via alias")
            pyotp.send(a, "second, dropped")
            pyotp.send(me, "marker")
        pyotp.spawn(other)
        return [await pyotp.receive() for _ in range(3)]
    assert pyotp.run(main) == [("other_unalias", False), "via alias", "marker"]


def test_alias_of_a_dead_process_drops_and_bad_arguments():
    async def main():
        me = pyotp.self()

        async def short():
            pyotp.send(me, pyotp.alias())
        pyotp.spawn(short)
        a = await pyotp.receive()
        pyotp.send(a, "nobody")        # owner gone: dropped, no error
        with pytest.raises(pyotp.BadArg):
            pyotp.alias("forever")
        with pytest.raises(pyotp.BadArg):
            pyotp.unalias("not a ref")
        return "ok"
    assert pyotp.run(main) == "ok"
    with pytest.raises(pyotp.CallbackError):
        pyotp.alias()
