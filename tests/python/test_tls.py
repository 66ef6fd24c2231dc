"""wss:// against the real wshandler binary with Python's own `ssl` (OpenSSL):
a CA and certificates made in the test with the `openssl` command line, the
protocol over TLS with `websockets`, TLS 1.1 refused, mutual TLS (the right
CA's certificate is the device identity, another CA's is refused in the TLS
handshake) and a certificate reload on SIGHUP that keeps open connections.

Run: WSHANDLER_BIN=target/debug/wshandler pytest tests/python
"""

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import warnings

import pytest
import websockets
from wshserver import spawn

TOKEN = "py-tls-token"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """A CA in `dir`, and certificates it signs (EC P-256, as devices use)."""

    def __init__(self, dir, name):
        self.dir = dir
        self.name = name
        dir.mkdir(parents=True, exist_ok=True)
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.pem", "-days", "2",
                "-subj", f"/CN={name} CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=dir)
        self.ca = dir / f"{name}-ca.pem"

    def issue(self, stem, cn, client=False):
        """`stem`.pem and `stem`.key: a server certificate for localhost, or a
        client certificate with subject `cn`."""
        ext = self.dir / f"{stem}.ext"
        if client:
            ext.write_text("extendedKeyUsage=clientAuth\n")
        else:
            ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", f"/CN={cn}", cwd=self.dir)
        openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", self.ca.name,
                "-CAkey", f"{self.name}-ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", ext.name, "-out", f"{stem}.pem", cwd=self.dir)
        return self.dir / f"{stem}.pem", self.dir / f"{stem}.key"


def der_of(pem_path):
    return ssl.PEM_cert_to_DER_cert(pem_path.read_text())


def start_server(tmp_path, *extra):
    """The binary serving plain on one port and TLS on another; returns the
    process, the plain address and the TLS address."""
    proc, plain = spawn(
        ["--shards", "2", "--set", "enable_authentication=true", "--set", "tls_port=0",
         "--set", "tls_watch_interval=0s",
         "--set", f"data_dir={tmp_path / 'data'}", "--log-level", "warn", *extra],
        {"WSH_AUTH_TOKEN": TOKEN},
    )
    tls = proc.stdout.readline()
    assert tls.startswith("wshandler listening for wss on "), tls
    return proc, plain, tls.strip().rsplit(" ", 1)[1]


def stop(proc):
    proc.terminate()
    assert proc.wait(timeout=15) == 0


def client_context(ca, cert=None, key=None):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def tls_probe(addr, ctx):
    """TLS handshake, an HTTP upgrade request, the first bytes back; and the
    server certificate shown. Raises ssl.SSLError when TLS refuses."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            seen = s.getpeercert(binary_form=True)
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
            head = s.recv(4096)
            return head, seen


async def recv_type(ws, ty):
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m["type"] == ty:
            return m


@pytest.fixture
def pki(tmp_path):
    p = Pki(tmp_path / "pki", "server")
    cert, key = p.issue("srv", "localhost")
    return p, cert, key


def test_wss_protocol_flow_and_tls11_refused(tmp_path, pki):
    p, cert, key = pki
    proc, plain, tls = start_server(tmp_path, "--set", f"tls_cert={cert}", "--set", f"tls_key={key}")
    try:
        ctx = client_context(p.ca)

        async def flow():
            async with websockets.connect(f"wss://localhost:{tls.rsplit(':', 1)[1]}/", ssl=ctx) as dev, \
                    websockets.connect(f"wss://localhost:{tls.rsplit(':', 1)[1]}/", ssl=ctx) as sub:
                for ws in (dev, sub):
                    welcome = await recv_type(ws, "welcome")
                    assert welcome["authRequired"] is True
                    await ws.send(json.dumps({"type": "handshake", "clientType": "application", "version": "1.0.0"}))
                    assert (await recv_type(ws, "handshake_response"))["success"]
                    await ws.send(json.dumps({"type": "auth", "token": TOKEN}))
                    assert (await recv_type(ws, "auth_response"))["success"]
                await sub.send(json.dumps({"type": "subscribe", "topic": "sensors.>"}))
                assert (await recv_type(sub, "subscribe_response"))["success"]
                await dev.send(json.dumps({"type": "publish", "topic": "sensors.x", "data": {"v": 1}}))
                assert (await recv_type(sub, "publish"))["data"] == {"v": 1}
                await dev.send(json.dumps({"type": "data", "dataType": "sensor", "data": {"temperature": 21}}))
                ack = await recv_type(dev, "data_response")
                assert ack["success"] and isinstance(ack["insertId"], int), ack
            # Plain stays plain on the other port.
            async with websockets.connect(f"ws://{plain}/") as ws:
                assert (await recv_type(ws, "welcome"))["type"] == "welcome"

        asyncio.run(asyncio.wait_for(flow(), 60))

        # TLS 1.1 (and older) is refused by the server. OpenSSL itself would
        # not offer 1.1 at its default security level.
        old = client_context(p.ca)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with pytest.raises(ssl.SSLError) as e:
            tls_probe(tls, old)
        # The server's alert, not the client failing to offer 1.1.
        assert "ALERT" in str(e.value).upper(), e.value
        # TLS 1.2 is accepted by default.
        ok = client_context(p.ca)
        ok.maximum_version = ssl.TLSVersion.TLSv1_2
        head, _ = tls_probe(tls, ok)
        assert head.startswith(b"HTTP/1.1 101"), head
    finally:
        stop(proc)


def test_mtls_identity_and_wrong_ca_refused(tmp_path, pki):
    p, cert, key = pki
    devices = Pki(tmp_path / "devices", "devices")
    dev_cert, dev_key = devices.issue("dev", "device-py-7", client=True)
    rogue = Pki(tmp_path / "rogue", "rogue")
    bad_cert, bad_key = rogue.issue("bad", "device-py-7", client=True)
    proc, plain, tls = start_server(tmp_path, "--set", f"tls_cert={cert}", "--set", f"tls_key={key}",
                                    "--set", f"tls_client_ca={devices.ca}")
    try:
        port = tls.rsplit(":", 1)[1]

        async def flow():
            ctx = client_context(p.ca, dev_cert, dev_key)
            async with websockets.connect(f"wss://localhost:{port}/", ssl=ctx) as ws:
                welcome = await recv_type(ws, "welcome")
                assert welcome.get("deviceId") == "device-py-7", welcome
                assert welcome.get("authenticated") is True, welcome
                # No auth message: the certificate authenticated it.
                await ws.send(json.dumps({"type": "data", "dataType": "sensor", "data": {"temperature": 1}}))
                ack = await recv_type(ws, "data_response")
                assert ack["success"], ack

        asyncio.run(asyncio.wait_for(flow(), 60))

        for ctx in (client_context(p.ca, bad_cert, bad_key), client_context(p.ca)):
            with pytest.raises(ssl.SSLError) as e:
                tls_probe(tls, ctx)
            assert "alert" in str(e.value) or "ALERT" in str(e.value), e.value
    finally:
        stop(proc)


def test_sighup_reloads_certificate_and_keeps_connections(tmp_path, pki):
    p, cert, key = pki
    proc, plain, tls = start_server(tmp_path, "--set", f"tls_cert={cert}", "--set", f"tls_key={key}")
    try:
        port = tls.rsplit(":", 1)[1]
        ctx = client_context(p.ca)
        first = der_of(cert)

        async def flow():
            async with websockets.connect(f"wss://localhost:{port}/", ssl=ctx) as old:
                await recv_type(old, "welcome")
                _, seen = tls_probe(tls, ctx)
                assert seen == first
                # New certificate and key, renamed over the old files.
                new_cert, new_key = p.issue("srv2", "localhost")
                os.replace(new_key, key)
                os.replace(new_cert, cert)
                second = der_of(cert)
                proc.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 10
                while tls_probe(tls, ctx)[1] != second:
                    assert time.monotonic() < deadline, "SIGHUP did not reload the certificate"
                    await asyncio.sleep(0.05)
                # The connection opened before the reload still works.
                await old.send(json.dumps({"type": "heartbeat"}))
                assert (await recv_type(old, "heartbeat_response"))["type"] == "heartbeat_response"
                # A bad file on SIGHUP: logged, the last good certificate stays.
                cert.write_text("garbage")
                proc.send_signal(signal.SIGHUP)
                await old.send(json.dumps({"type": "heartbeat"}))
                await recv_type(old, "heartbeat_response")
                assert tls_probe(tls, ctx)[1] == second

        asyncio.run(asyncio.wait_for(flow(), 60))
    finally:
        stop(proc)
