"""The seed's Python WebSocketClient flow against the real wshandler binary.

The client below is written the way the seed document's `WebSocketClient`
is (asyncio + websockets, a listener task dispatching on `type`, futures for
pending requests). A second client plays a backend `service` that registers
the endpoint and RPC method the device calls, so the standalone binary serves
them without any Rust code.

Run: WSHANDLER_BIN=target/debug/wshandler pytest tests/python
"""

import asyncio
import base64
import json
import os
import random
import subprocess
import time

import websockets

TOKEN = "py-test-token"


class WebSocketClient:
    """Modelled on the seed's Python client."""

    def __init__(self, uri, auth_token=None, client_type="application"):
        self.uri = uri
        self.auth_token = auth_token
        self.client_type = client_type
        self.websocket = None
        self.client_id = None
        self.pending_requests = {}
        self.inbox = asyncio.Queue()
        self.authenticated = asyncio.Event()
        self.welcomed = asyncio.Event()
        self.request_handlers = {}

    async def connect(self):
        self.websocket = await websockets.connect(self.uri)
        self.listener = asyncio.create_task(self.listen())
        await asyncio.wait_for(self.welcomed.wait(), 5)

    async def disconnect(self):
        await self.websocket.close()
        self.listener.cancel()

    async def send_message(self, message):
        await self.websocket.send(json.dumps(message))

    async def listen(self):
        async for message in self.websocket:
            if isinstance(message, bytes):
                continue
            await self.handle_message(json.loads(message))

    async def handle_message(self, data):
        message_type = data.get("type")
        if message_type == "welcome":
            self.client_id = data.get("clientId")
            await self.send_handshake()
            if data.get("authRequired") and self.auth_token:
                await self.authenticate()
            self.welcomed.set()
        elif message_type == "auth_response":
            if data.get("success"):
                self.authenticated.set()
            await self.inbox.put(data)
        elif message_type == "request":
            await self.handle_server_request(data)
        elif message_type in ("response", "rpc_response"):
            future = self.pending_requests.pop(data.get("requestId"), None)
            if future is not None:
                if data.get("success"):
                    future.set_result(data.get("data"))
                else:
                    future.set_exception(Exception(data.get("error", "Request failed")))
        elif message_type == "rpc_call":
            await self.handle_server_request(data)
        else:
            await self.inbox.put(data)

    async def send_handshake(self):
        await self.send_message({
            "type": "handshake",
            "clientType": self.client_type,
            "capabilities": ["data_processing", "file_upload", "analytics"],
            "version": "1.0.0",
        })

    async def authenticate(self):
        await self.send_message({"type": "auth", "token": self.auth_token})

    async def expect(self, message_type, timeout=5):
        while True:
            data = await asyncio.wait_for(self.inbox.get(), timeout)
            if data.get("type") == message_type:
                return data

    async def send_data(self, data, data_type="application"):
        await self.send_message({
            "type": "data",
            "dataType": data_type,
            "data": data,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        return await self.expect("data_response")

    async def call(self, kind, name, payload, timeout=10):
        request_id = f"req_{int(time.time() * 1000)}_{random.randint(1000, 9999)}"
        future = asyncio.get_running_loop().create_future()
        self.pending_requests[request_id] = future
        if kind == "request":
            await self.send_message({"type": "request", "requestId": request_id, "endpoint": name, "data": payload or {}})
        else:
            await self.send_message({"type": "rpc_call", "requestId": request_id, "method": name, "params": payload or {}})
        return await asyncio.wait_for(future, timeout)

    async def send_request(self, endpoint, data=None, timeout=10):
        return await self.call("request", endpoint, data, timeout)

    async def rpc(self, method, params=None, timeout=10):
        return await self.call("rpc", method, params, timeout)

    async def subscribe(self, topic):
        await self.send_message({"type": "subscribe", "topic": topic})
        return await self.expect("subscribe_response")

    async def publish(self, topic, data):
        await self.send_message({"type": "publish", "topic": topic, "data": data})
        return await self.expect("publish_response")

    async def handle_server_request(self, data):
        handler = self.request_handlers.get(data.get("endpoint") or data.get("method"))
        reply_type = "response" if data["type"] == "request" else "rpc_response"
        response = {"type": reply_type, "requestId": data.get("requestId"), "success": True, "data": {}}
        try:
            if handler is None:
                raise Exception(f"Unknown endpoint: {data.get('endpoint')}")
            response["data"] = handler(data.get("data") or data.get("params") or {})
        except Exception as e:  # the seed answers errors this way
            response["success"] = False
            response["error"] = str(e)
        await self.send_message(response)

    async def upload_file(self, path, chunk_size=1024):
        size = os.path.getsize(path)
        stream_id = f"upload_{int(time.time())}_{os.path.basename(path)}"
        await self.send_message({
            "type": "stream_start",
            "streamId": stream_id,
            "streamType": "file_upload",
            "metadata": {"filename": os.path.basename(path), "size": size, "mime_type": "application/octet-stream"},
        })
        started = await self.expect("stream_start_response")
        assert started["success"], started
        with open(path, "rb") as f:
            sequence = 0
            while True:
                chunk = f.read(chunk_size)
                if not chunk:
                    break
                await self.send_message({
                    "type": "stream_data",
                    "streamId": stream_id,
                    "data": base64.b64encode(chunk).decode("utf-8"),
                    "sequenceNumber": sequence,
                })
                sequence += 1
        await self.send_message({"type": "stream_end", "streamId": stream_id})
        return await self.expect("stream_end_response")


def start_server(tmp_path):
    binary = os.environ.get("WSHANDLER_BIN", "target/debug/wshandler")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSH_")}
    env["WSH_AUTH_TOKEN"] = TOKEN
    proc = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--shards", "2",
         "--set", "enable_authentication=true", "--set", "required_fields=temperature",
         "--set", f"data_dir={tmp_path / 'data'}",
         "--log-level", "warn"],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("wshandler listening on "), line
    return proc, "ws://" + line.strip().rsplit(" ", 1)[1]


def test_seed_python_client_flow(tmp_path):
    proc, uri = start_server(tmp_path)
    try:
        asyncio.run(asyncio.wait_for(flow(uri, tmp_path), 60))
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


async def flow(uri, tmp_path):
    # A backend service that implements what the device calls.
    service = WebSocketClient(uri, TOKEN, client_type="service")
    service.request_handlers["get_weather"] = lambda d: {"city": d.get("city"), "temperature": 22, "condition": "sunny"}
    service.request_handlers["calculateAverage"] = lambda p: sum(p["values"]) / len(p["values"])
    await service.connect()
    await asyncio.wait_for(service.authenticated.wait(), 5)
    for kind, name in (("endpoint", "get_weather"), ("method", "calculateAverage")):
        await service.send_message({"type": "register", "kind": kind, "name": name})
        reg = await service.expect("register_response")
        assert reg["success"], reg

    client = WebSocketClient(uri, TOKEN)
    await client.connect()
    await asyncio.wait_for(client.authenticated.wait(), 5)
    assert client.client_id

    listener = WebSocketClient(uri, TOKEN)
    await listener.connect()
    await asyncio.wait_for(listener.authenticated.wait(), 5)
    assert (await listener.subscribe("data_updates"))["success"]
    assert (await client.subscribe("system_alerts"))["success"]

    ok = await client.send_data({"temperature": 21.5, "processed_records": 150, "status": "healthy"})
    assert ok["success"] is True and "timestamp" in ok and ok["insertId"] >= 1
    bad = await client.send_data({"status": "no temperature"})
    assert bad["success"] is False and bad["missingFields"] == ["temperature"]

    weather = await client.send_request("get_weather", {"city": "New York"})
    assert weather == {"city": "New York", "temperature": 22, "condition": "sunny"}
    echoed = await client.send_request("echo", {"ping": 1})
    assert echoed == {"ping": 1}
    try:
        await client.send_request("no_such_endpoint")
        raise AssertionError("expected an error")
    except Exception as e:
        assert "Unknown endpoint: no_such_endpoint" in str(e)

    published = await client.publish("data_updates", {"source": "python_client", "message": "Processing completed"})
    assert published["success"]
    got = await listener.expect("publish")
    assert got["topic"] == "data_updates" and got["data"]["source"] == "python_client"
    assert got["from"] == client.client_id

    assert await client.rpc("calculateAverage", {"values": [10, 20, 30, 40, 50]}) == 30

    path = tmp_path / "upload.bin"
    content = os.urandom(5000)
    path.write_bytes(content)
    done = await client.upload_file(str(path))
    assert done["success"] and done["chunks"] == 5 and done["bytes"] == len(content)

    for c in (client, listener, service):
        await c.disconnect()
