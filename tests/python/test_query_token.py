"""Issue 11: a client that can only set the URL (a browser, the seed's React
hook, which as published never manages to send its `auth` message)
authenticates with `?token=`: the welcome says it is authenticated and the
protocol works without an `auth` message. A hashed token entry gives the
device identity; a bad URL token is refused with 4003.

Run: WSHANDLER_BIN=target/debug/wshandler pytest tests/python
"""

import asyncio
import hashlib
import json

import websockets
from wshserver import spawn

TOKEN = "browser-dashboard-token"


def start_server(tmp_path):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    tokens = (
        f'[{{ sha256 = "{digest}", device_id = "dash-1", client_type = "application",'
        f' permissions = {{ subscribe = ["sensors.>"], publish = ["sensors.>"] }} }}]'
    )
    proc, addr = spawn(
        ["--shards", "2", "--set", "enable_authentication=true", "--set", "persist=false",
         "--log-level", "error"],
        {"WSH_AUTH_TOKENS": tokens},
    )
    return proc, "ws://" + addr


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def flow(uri):
    async with websockets.connect(f"{uri}/?token={TOKEN}") as ws:
        welcome = await recv(ws)
        assert welcome["type"] == "welcome", welcome
        assert welcome["authRequired"] is False
        assert welcome["authenticated"] is True
        assert welcome["deviceId"] == "dash-1"
        await ws.send(json.dumps({"type": "subscribe", "topic": "sensors.>"}))
        assert (await recv(ws))["success"] is True
        await ws.send(json.dumps({"type": "subscribe", "topic": "admin.>", "requestId": "s2"}))
        refused = await recv(ws)
        assert refused["code"] == "forbidden" and refused["requestId"] == "s2", refused
        # Its own publish on another connection of the same credential.
        async with websockets.connect(f"{uri}/?token={TOKEN}") as pub:
            await recv(pub)
            await pub.send(json.dumps({"type": "publish", "topic": "sensors.t1", "data": {"c": 21.5}}))
            assert (await recv(pub))["success"] is True
        msg = await recv(ws)
        assert msg["topic"] == "sensors.t1" and msg["data"] == {"c": 21.5}, msg

    async with websockets.connect(f"{uri}/?token=wrong") as bad:
        assert (await recv(bad))["authRequired"] is True
        err = await recv(bad)
        assert err["code"] == "auth_failed", err
        try:
            await asyncio.wait_for(bad.recv(), 5)
            raise AssertionError("not closed")
        except websockets.ConnectionClosed as e:
            assert e.rcvd.code == 4003, e


def test_url_token_flow(tmp_path):
    proc, uri = start_server(tmp_path)
    try:
        asyncio.run(asyncio.wait_for(flow(uri), 30))
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
