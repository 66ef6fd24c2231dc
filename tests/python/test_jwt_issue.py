"""Issue 11: the device-JWT issuance example of docs/security.md, run for
real: PyJWT signs, the binary verifies, the device is who `sub` says, with
the permissions of `perm`; an expired token and a wrong audience are
refused.

Run: WSHANDLER_BIN=target/debug/wshandler pytest tests/python
"""

import asyncio
import json
import time

import jwt  # PyJWT
import websockets
from wshserver import spawn

SECRET = "docs-example-secret-of-at-least-32-bytes"


def issue(sub, **extra):
    claims = {
        "sub": sub,
        "exp": int(time.time()) + 24 * 3600,
        "aud": "wshandler", "ctype": "microcontroller",
        "perm": {"publish": ["devices.{device}.>"], "ingest": ["sensor"],
                 "subscribe": ["devices.{device}.cmd"]},
    }
    claims.update(extra)
    return jwt.encode(claims, SECRET, algorithm="HS256")


def start_server(tmp_path):
    secret_file = tmp_path / "jwt.secret"
    secret_file.write_text(SECRET + "\n")
    proc, addr = spawn(
        ["--set", "enable_authentication=true", "--set", "persist=false",
         "--set", f"jwt.hmac_secret_file={secret_file}", "--log-level", "error"],
        {"WSH_JWT_AUDIENCE": "wshandler"},
    )
    return proc, "ws://" + addr


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def auth(uri, token):
    async with websockets.connect(uri) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "auth", "token": token}))
        reply = await recv(ws)
        if reply["success"]:
            await ws.send(json.dumps({"type": "publish", "topic": "devices.pump-7.t", "data": 1}))
            own = await recv(ws)
            await ws.send(json.dumps({"type": "publish", "topic": "devices.pump-8.t", "data": 1}))
            other = await recv(ws)
            return reply, own, other
        return reply, None, None


async def flow(uri):
    reply, own, other = await auth(uri, issue("pump-7"))
    assert reply["success"] is True and reply["deviceId"] == "pump-7", reply
    assert 0 < reply["expiresIn"] <= 24 * 3600
    assert own["type"] == "publish_response" and own["success"] is True, own
    assert other["code"] == "forbidden", other
    reply, _, _ = await auth(uri, issue("pump-7", exp=int(time.time()) - 3600))
    assert reply["success"] is False and "expired" in reply["message"], reply
    reply, _, _ = await auth(uri, issue("pump-7", aud="someone-else"))
    assert reply["success"] is False, reply


def test_docs_jwt_example(tmp_path):
    proc, uri = start_server(tmp_path)
    try:
        asyncio.run(asyncio.wait_for(flow(uri), 30))
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
