"""make cross-check: runs a cross-built hydrogen-ws under qemu user emulation and asks it
system/ping with the Python `websockets` client (issue #15 §2).

usage: check.py BINARY RUNNER [RUNNER ARGS...]   e.g. check.py target/aarch64-.../hydrogen-ws qemu-aarch64 -L /
Prints what it saw and exits 0 only if the pong came back and the server stopped cleanly.
"""
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from websockets.asyncio.client import connect

KEY = "cross-check-key-0123456789abcdef"
WAIT = 120  # seconds: emulation is slow, the first start most of all


def start(binary, runner):
    cfg = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump({"WebSocketServer": {"Port": 0, "Interface": "127.0.0.1",
                                   "ShutdownTimeouts": {"CloseWaitMs": 500}}}, cfg)
    cfg.close()
    env = dict(os.environ, HYDROGEN_API_KEY=KEY, RUST_LOG="info")
    proc = subprocess.Popen(runner + [binary, "--config", cfg.name], env=env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT
    for line in proc.stderr:
        sys.stderr.write("  server: " + line)
        m = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        if m:
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    sys.exit("the server did not start listening")


async def ping(addr):
    async with connect(f"ws://{addr}/", subprotocols=["hydrogen-protocol"],
                       additional_headers={"Authorization": f"Key {KEY}"},
                       open_timeout=WAIT) as ws:
        await ws.send(json.dumps({"type": "command", "id": "1", "channel": "system",
                                  "action": "ping"}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if msg.get("type") == "response" and msg.get("id") == "1":
                return msg


def main():
    binary, runner = sys.argv[1], sys.argv[2:]
    out = ""
    if shutil.which("file"):
        out = subprocess.run(["file", "-b", binary], capture_output=True, text=True).stdout.strip()
    print(f"binary: {out or binary}, {os.path.getsize(binary)} bytes")
    proc, addr = start(binary, runner)
    try:
        t = time.monotonic()
        reply = asyncio.run(ping(addr))
        print(f"system/ping on {addr} under {' '.join(runner)}: {json.dumps(reply['data'])} "
              f"({(time.monotonic() - t) * 1000:.0f} ms with the handshake)")
        if reply.get("data", {}).get("pong") is not True:
            sys.exit("no pong")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(WAIT)
    print(f"server exit code after SIGTERM: {code}")
    sys.exit(0 if code == 0 else 1)


if __name__ == "__main__":
    main()
