"""Start the real wshandler binary for a test: loopback, an ephemeral port,
no WSH_* variables inherited (the server refuses unknown ones) except those
given; returns the process and the address it printed."""

import os
import subprocess


def spawn(args, env_extra=None):
    binary = os.environ.get("WSHANDLER_BIN", "target/debug/wshandler")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSH_")}
    env.update(env_extra or {})
    proc = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("wshandler listening on "), line
    return proc, line.strip().rsplit(" ", 1)[1]
