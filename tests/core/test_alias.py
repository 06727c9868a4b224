"""Process aliases (erlang:alias/unalias): messages to an active alias reach its owner,
an unaliased or used-up one drops them; bad use is a clear error. The async tests run
as the first process of a fresh node (the pyotp pytest plugin)."""
import pytest

import pyotp


@pytest.mark.pyotp
async def test_alias_routes_until_unalias():
    a = pyotp.alias()
    pyotp.send(a, "one")
    assert await pyotp.receive() == "one"
    assert pyotp.unalias(a) is True
    assert pyotp.unalias(a) is False           # already inactive
    pyotp.send(a, "dropped")
    pyotp.send(pyotp.self(), "marker")
    assert await pyotp.receive() == "marker"


@pytest.mark.pyotp
async def test_reply_mode_is_one_shot_and_other_processes_cannot_unalias():
    a = pyotp.alias("reply")
    me = pyotp.self()

    async def other():
        pyotp.send(me, ("other_unalias", pyotp.unalias(a)))
        pyotp.send(a, "via alias")
        pyotp.send(a, "second, dropped")
        pyotp.send(me, "marker")
    pyotp.spawn(other)
    assert [await pyotp.receive() for _ in range(3)] == [
        ("other_unalias", False), "via alias", "marker"]


@pytest.mark.pyotp
async def test_alias_of_a_dead_process_drops_and_bad_arguments():
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


def test_alias_outside_a_process_is_a_callback_error():
    with pytest.raises(pyotp.CallbackError):
        pyotp.alias()
