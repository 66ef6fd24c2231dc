"""The dashboard in a real browser: headless Chromium (selenium) against
the real binary, after a small scripted load from Python websockets clients.

Checks what an operator sees: the connection counts by client type, the
ingested count, the live tail of a topic, and that Disconnect really closes
the client's connection. A screenshot is saved in the test's tmp dir (the
path is printed; `pytest -s` shows it).

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian `chromium`,
`chromium-driver`); skipped without them.

Run: WSHANDLER_BIN=target/debug/wshandler pytest tests/python/test_dashboard.py
"""

import asyncio
import json
import os
import shutil
import time

import pytest
import websockets
from wshserver import spawn

ADMIN_TOKEN = "dash-admin-secret"
N_DATA = 7
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

webdriver = pytest.importorskip("selenium.webdriver")
if not (shutil.which(CHROMEDRIVER) and shutil.which(CHROMIUM)):
    if os.environ.get("WSHANDLER_REQUIRE_BROWSER"):
        raise RuntimeError("chromium and chromium-driver are required (tests/system-packages.sh)")
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)


from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,1800"]:
        opts.add_argument(a)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                            options=opts)


def by_testid(driver, tid):
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{tid}"]')


def wait_text(driver, tid, want, timeout=15):
    """Wait until the element's text equals `want`; its last text otherwise."""
    def ok(d):
        els = d.find_elements(By.CSS_SELECTOR, f'[data-testid="{tid}"]')
        return els and els[0].text.strip() == want
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.2).until(ok)
    except Exception:
        els = driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{tid}"]')
        pytest.fail(f"{tid}: wanted {want!r}, shows {els[0].text if els else None!r}")


async def client(uri, client_type):
    ws = await websockets.connect(uri)
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    await ws.send(json.dumps({"type": "handshake", "clientType": client_type}))
    while (m := json.loads(await ws.recv()))["type"] != "handshake_response":
        pass
    return ws, welcome.get("clientId")


async def expect(ws, ty, timeout=5):
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if m["type"] == ty:
            return m


def test_dashboard(tmp_path):
    proc, addr = spawn(
        ["--shards", "2", "--set", "persist=false", "--set", f"data_dir={tmp_path / 'data'}",
         "--set", f"admin_token={ADMIN_TOKEN}", "--log-level", "warn"],
    )
    uri = f"ws://{addr}/"
    base = f"http://{addr}"
    loop = asyncio.new_event_loop()
    driver = None
    try:
        # The load: 3 microcontrollers (sensors), 2 applications (one subscribed), N data messages.
        sensors = [loop.run_until_complete(client(uri, "microcontroller")) for _ in range(3)]
        apps = [loop.run_until_complete(client(uri, "application")) for _ in range(2)]
        for i in range(N_DATA):
            ws = sensors[i % 3][0]
            loop.run_until_complete(ws.send(json.dumps(
                {"type": "data", "dataType": "temperature", "data": {"celsius": 20 + i}})))
            loop.run_until_complete(expect(ws, "data_response"))
        sub, _ = apps[0]
        loop.run_until_complete(sub.send(json.dumps({"type": "subscribe", "topic": "sensors.>"})))
        loop.run_until_complete(expect(sub, "subscribe_response"))

        driver = browser()
        driver.get(base + "/dashboard")
        by_testid(driver, "token").send_keys(ADMIN_TOKEN)
        by_testid(driver, "login-btn").click()
        WebDriverWait(driver, 10).until(lambda d: by_testid(d, "app").is_displayed())
        WebDriverWait(driver, 10).until(lambda d: by_testid(d, "live-status").text == "live")

        wait_text(driver, "stat-connections", "5")
        wait_text(driver, "type-count-microcontroller", "3")
        wait_text(driver, "type-count-application", "2")
        # Needs the real counters (scrape::overview): zero while they are a stub.
        wait_text(driver, "stat-ingested", str(N_DATA))

        # The live tail sees a publish made after it started.
        by_testid(driver, "tail-topic").send_keys("sensors.>")
        by_testid(driver, "tail-start").click()
        WebDriverWait(driver, 10).until(lambda d: by_testid(d, "tail-state").text.startswith("tailing"))
        time.sleep(0.5)  # the tail's request reaches its shard
        pub = sensors[0][0]
        loop.run_until_complete(pub.send(json.dumps(
            {"type": "publish", "topic": "sensors.room1.temperature", "data": {"marker": "tail-me-42"}})))
        loop.run_until_complete(expect(pub, "publish_response"))
        loop.run_until_complete(expect(sub, "publish"))
        WebDriverWait(driver, 10).until(
            lambda d: "tail-me-42" in by_testid(d, "tail-log").text)

        # Disconnect the second application from the clients table.
        victim, victim_id = apps[1]
        assert victim_id, "welcome carries the clientId"
        WebDriverWait(driver, 10).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-testid="disconnect-{victim_id}"]'))
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        print(f"dashboard screenshot: {shot}")
        by_testid(driver, f"disconnect-{victim_id}").click()

        async def closed():
            try:
                while True:
                    await asyncio.wait_for(victim.recv(), 10)
            except websockets.ConnectionClosed:
                return True
        assert loop.run_until_complete(closed())
        wait_text(driver, "stat-connections", "4")
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=10)
        loop.close()
