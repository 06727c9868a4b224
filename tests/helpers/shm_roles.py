"""Child-process roles for tests/distribution/test_shm_ring.py (plain scripts: no pytest here).

    python shm_roles.py <role> <segment fd> <bell fd> <capacity> [args]
"""
import asyncio
import os
import socket
import sys

from pyotp import _core
from pyotp.dist.shm_transport import ShmTransport


def blocking_writer(ring, bell, total, chunk):
    """Write the byte pattern i % 251 for `total` bytes in pieces of `chunk`, sleeping on
    the bell whenever the ring is full (the raw wake-up protocol, no event loop)."""
    bell.setblocking(True)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        piece = bytes((sent + i) % 251 for i in range(n))
        off = 0
        while off < n:
            k = ring.write(piece[off:])
            off += k
            if k and ring.wake_reader():
                bell.send(b"\x01")
            if off < n and not k and ring.wait_space():
                if not bell.recv(64):
                    return
        sent += n
    # wait for the reader's word that it has everything, then go
    bell.recv(1)


class Echo(asyncio.BufferedProtocol):
    def __init__(self, done):
        self.buf = bytearray(1 << 16)
        self.done = done

    def connection_made(self, t):
        self.t = t

    def get_buffer(self, n):
        return memoryview(self.buf)

    def buffer_updated(self, n):
        self.t.write(self.buf[:n])

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(exc)


async def echo(ring, bell):
    done = asyncio.get_running_loop().create_future()
    ShmTransport(ring, bell, Echo(done))
    await done


def main():
    role, fd, bell_fd, cap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ring = _core.ShmRingPair(fd, cap, 1)
    os.close(fd)
    bell = socket.socket(fileno=bell_fd)
    if role == "writer":
        blocking_writer(ring, bell, int(sys.argv[5]), int(sys.argv[6]))
    elif role == "echo":
        asyncio.run(echo(ring, bell))
    elif role == "hang":
        print("ready", flush=True)
        sys.stdin.read()      # until killed
    elif role == "garbage":
        ring._poke("head", int(sys.argv[5]))
        bell.send(b"\x01")
        sys.stdin.read()


if __name__ == "__main__":
    main()
