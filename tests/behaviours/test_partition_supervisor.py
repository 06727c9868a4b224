"""PartitionSupervisor.resize (Elixir 1.18's resize!) on a single node."""
import pytest

import pyotp
from pyotp import GenServer
from pyotp.partition_supervisor import PartitionSupervisor


class Part(GenServer):
    def init(self, i):
        return ("ok", i)

    def handle_call(self, req, frm, i):
        return ("reply", i, i)


def _with_index(args, partition):
    return [partition]


def via(key):
    return ("via", PartitionSupervisor, ("parts", key))


async def _resizing():
    await PartitionSupervisor.start_link(child_spec=(Part, None), name="parts", partitions=4,
                                         with_arguments=_with_index)
    seen = {"start": sorted([await GenServer.call(via(k), "which") for k in range(8)])}
    seen["shrink"] = await PartitionSupervisor.resize("parts", 2)
    seen["after_shrink"] = (PartitionSupervisor.partitions("parts"),
                            (await PartitionSupervisor.count_children("parts"))["active"],
                            sorted({await GenServer.call(via(k), "which") for k in range(8)}))
    assert await PartitionSupervisor.resize("parts", 0) == 2
    seen["none"] = PartitionSupervisor.whereis_name(("parts", 1))
    with pytest.raises(pyotp.BadArg):
        PartitionSupervisor.send(("parts", 1), "hi")
    with pytest.raises(ValueError, match="from 0 to 4"):
        await PartitionSupervisor.resize("parts", 5)
    with pytest.raises(TypeError):
        await PartitionSupervisor.resize("parts", "2")
    with pytest.raises(pyotp.BadArg):
        await PartitionSupervisor.resize("nope", 1)
    seen["grow"] = await PartitionSupervisor.resize("parts", 4)
    seen["after_grow"] = ((await PartitionSupervisor.count_children("parts"))["active"],
                          sorted({await GenServer.call(via(k), "which") for k in range(8)}))
    await PartitionSupervisor.stop("parts")
    return seen


def test_resize_stops_and_restarts_the_highest_partitions():
    seen = pyotp.run(_resizing)
    assert seen["start"] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert seen["shrink"] == 4
    assert seen["after_shrink"] == (2, 2, [0, 1])
    assert seen["none"] is None
    assert seen["grow"] == 0
    assert seen["after_grow"] == (4, [0, 1, 2, 3])
