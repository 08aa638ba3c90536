"""permessage-deflate against clients and servers that are not ours (tests/compression.rs).

  compression.py client PORT KEY   Python `websockets` (compression on by default) against
                                   hydrogen-ws: prints the negotiated extensions, checks a
                                   status round trip, says SUBSCRIBED, then prints the data
                                   of the first `print` event as one JSON line.
  compression.py server            a `websockets` server with compression: prints its port,
                                   answers every command with a response whose data holds the
                                   extensions it negotiated, the length of the command's
                                   `data.blob` and a 4 KB `blob` of its own.
"""
import asyncio
import json
import sys

import websockets
from websockets.asyncio.server import serve


def extensions(ws):
    return [type(e).__name__ + ":" + e.name for e in ws.protocol.extensions]


async def client(port, key):
    async with websockets.connect(f"ws://127.0.0.1:{port}/", subprotocols=["hydrogen-protocol"],
                                  additional_headers={"Authorization": f"Key {key}"}) as ws:
        print("EXTENSIONS " + json.dumps({"header": ws.response.headers.get("Sec-WebSocket-Extensions"),
                                         "active": extensions(ws)}), flush=True)
        await ws.send(json.dumps({"type": "command", "id": "s1", "channel": "system", "action": "status"}))
        while True:
            m = json.loads(await ws.recv())
            if m.get("id") == "s1":
                assert m["data"]["status"]["running"] is True, m
                break
        print("STATUS ok", flush=True)
        blob = "x" * 5000
        await ws.send(json.dumps({"type": "command", "id": "s2", "channel": "system", "action": "subscribe",
                                  "data": {"channels": ["print"], "note": blob}}))
        while json.loads(await ws.recv()).get("id") != "s2":
            pass
        print("SUBSCRIBED", flush=True)
        while True:
            m = json.loads(await ws.recv())
            if m.get("type") == "event" and m.get("channel") == "print":
                print("EVENT " + json.dumps(m["data"]), flush=True)
                return


async def server():
    async def answer(ws):
        async for text in ws:
            m = json.loads(text)
            if m.get("type") != "command":
                continue
            blob = (m.get("data") or {}).get("blob", "")
            await ws.send(json.dumps({"type": "response", "id": m["id"], "channel": m["channel"],
                                      "action": m["action"], "status": "ok",
                                      "data": {"extensions": extensions(ws),
                                               "header": ws.request.headers.get("Sec-WebSocket-Extensions"),
                                               "received": len(blob), "blob": "y" * 4096}}))

    async with serve(answer, "127.0.0.1", 0, subprotocols=["hydrogen-protocol"]) as srv:
        port = srv.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.sleep(60)


if __name__ == "__main__":
    if sys.argv[1] == "client":
        asyncio.run(client(int(sys.argv[2]), sys.argv[3]))
    else:
        asyncio.run(server())
