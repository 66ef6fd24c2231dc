"""The [limits] refusals as a Python websockets client sees them.

A refused upgrade is an HTTP response, not a WebSocket close: the client
library raises with the status, and the headers and body say why and when to
retry. Settings are given the way an operator would: WSH_LIMITS_* variables
and `--set limits.*` flags.

Run: WSHANDLER_BIN=target/debug/wshandler pytest tests/python
"""

import asyncio
import json

import pytest
import websockets
from wshserver import spawn


def start_server(tmp_path, env_extra, flags):
    proc, addr = spawn(
        ["--shards", "2", "--set", "persist=false", "--set", f"data_dir={tmp_path / 'data'}",
         "--log-level", "warn", *flags],
        env_extra,
    )
    return proc, "ws://" + addr + "/"


def refusal(exc_info):
    """Status, headers and JSON body of a refused upgrade."""
    exc = exc_info.value
    # websockets >= 14: InvalidStatus.response; older: InvalidStatusCode.
    response = getattr(exc, "response", None)
    if response is not None:
        return response.status_code, response.headers, json.loads(response.body or b"{}")
    return exc.status_code, exc.headers, {}


async def per_ip_and_origin(uri):
    held = await websockets.connect(uri)
    assert json.loads(await held.recv())["type"] == "welcome"
    with pytest.raises(websockets.exceptions.InvalidHandshake) as e:
        await websockets.connect(uri)
    status, headers, body = refusal(e)
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    if body:
        assert body["code"] == "too_many_connections"
    await held.close()
    # Its place is given back once the server has seen the close; the
    # client then retries as Retry-After invites (bounded, no fixed sleep).
    for _ in range(100):
        try:
            again = await websockets.connect(uri, origin="https://app.example.com")
            break
        except websockets.exceptions.InvalidHandshake:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the place was never given back")
    await again.close()
    with pytest.raises(websockets.exceptions.InvalidHandshake) as e:
        await websockets.connect(uri, origin="https://evil.example")
    status, headers, body = refusal(e)
    assert status == 403
    assert "Retry-After" not in headers
    if body:
        assert body["code"] == "origin_not_allowed"


def test_limits_refusals_seen_by_a_python_client(tmp_path):
    proc, uri = start_server(
        tmp_path,
        {"WSH_LIMITS_MAX_CONNECTIONS_PER_IP": "1"},
        ["--set", "limits.allowed_origins=https://app.example.com"],
    )
    try:
        asyncio.run(asyncio.wait_for(per_ip_and_origin(uri), 60))
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
