"""EPMD (pyotp's own server, failover, a port held by something else, EPMD-less mode) and
TLS distribution."""
from __future__ import annotations

import asyncio
import datetime

import pytest

import pyotp
from pyotp.dist import EpmdError, Node, epmd, run_node
from dist_helpers import COOKIE, NodeProc, free_port, unique


def test_epmd_server_protocol():
    async def main():
        srv = await epmd.EpmdServer.start("127.0.0.1", 0)
        try:
            reg = await epmd.register("alpha", 4321, port=srv.port)
            dup = None
            try:
                await epmd.register("alpha", 4322, port=srv.port)
            except EpmdError as e:
                dup = "already in use" in str(e)
            entry = await epmd.port_please("alpha", "127.0.0.1", port=srv.port)
            names = await epmd.names(port=srv.port)
            missing = await epmd.port_please("beta", "127.0.0.1", port=srv.port)
            reg.close()
            await asyncio.sleep(0)    # let the server see the close (then it unregisters)
            for _ in range(100):
                if not await epmd.names(port=srv.port):
                    break
            after = await epmd.names(port=srv.port)
            return reg.creation > 0, dup, entry.port, entry.extra, names, missing, after
        finally:
            srv.close()
    assert pyotp.run(main) == (True, True, 4321, b"pyotp", [("alpha", 4321)], None, [])


def test_port_held_by_a_talking_server_gives_a_clear_error():
    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        writer.close()

    async def main():
        http = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = http.sockets[0].getsockname()[1]
        try:
            await Node.start(unique("a"), cookie=COOKIE, epmd=port)
        except EpmdError as e:
            return "not EPMD" in str(e)
        finally:
            http.close()
        return "started?"
    assert pyotp.run(main) is True


def test_port_held_by_a_silent_server_times_out_with_a_clear_error():
    async def main():
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        try:
            await Node.start(unique("a"), cookie=COOKIE, epmd=port)
        except EpmdError as e:
            return "not EPMD" in str(e)
        finally:
            silent.close()
        return "started?"
    assert pyotp.run(main) is True


def test_own_epmd_and_failover_when_its_host_dies():
    port = free_port()
    with NodeProc("b", role="dist_roles:role_idle", epmd=port) as b:
        b.expect("ready")                    # b found no EPMD on `port`: it hosts one
        c = NodeProc("c", role="dist_roles:role_idle", epmd=port).start()
        c.expect("ready")                    # c registered with b's
        b.kill()
        c.wait_log("registered with EPMD again")   # c now hosts the EPMD itself

        async def main():
            return await Node.ping(c.name)
        try:
            assert run_node(main, node=unique("a"), cookie=COOKIE, epmd=port) == "pong"
        finally:
            c.kill()


def test_epmd_less_mode():
    pa, pb = free_port(), free_port()
    with NodeProc("b", role="dist_roles:role_idle", epmd="none", port=pb) as b:
        b.expect("ready")

        async def main():
            Node.set_peer_port(b.name, pb)
            return await Node.ping(b.name), await Node.ping(unique("nobody"))
        assert run_node(main, node=unique("a"), cookie=COOKIE, epmd="none", port=pa) == ("pong", "pang")


def _make_certs(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("pyotp test CA")).issuer_name(name("pyotp test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            # Python 3.13's default contexts verify X.509 strictly: these two are required
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {}
    for fname, data in [("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
                        ("node.pem", cert.public_bytes(serialization.Encoding.PEM)),
                        ("node.key", key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))]:
        path = tmp_path / fname
        path.write_bytes(data)
        files[fname] = str(path)
    return {"certfile": files["node.pem"], "keyfile": files["node.key"], "cafile": files["ca.pem"]}


def test_tls_distribution(tmp_path):
    tls = _make_certs(tmp_path)
    with NodeProc("b", role="dist_roles:role_peer", tls=tls) as b:
        b.expect("ready")

        async def main():
            from pyotp import GenServer
            pong = await Node.ping(b.name)
            r = await GenServer.call(("echo", b.name), "over tls")
            return pong, r
        assert run_node(main, node=unique("a"), cookie=COOKIE, tls=tls) == ("pong", ("echo", "over tls", b.name))

        async def plain():
            return await Node.ping(b.name)
        assert run_node(plain, node=unique("a"), cookie=COOKIE, setup_time=3) == "pang"
