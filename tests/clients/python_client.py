"""A client that is not ours: Python `websockets` against a running hydrogen-ws.

Usage: python_client.py PORT KEY
Prints one line per check; prints READY and then waits for the server's close frame,
printing CLOSE <code> <reason>. Exits non-zero on any failed check.
"""
import asyncio
import datetime
import hashlib
import hmac
import json
import sys

import websockets


async def main(port: int, key: str) -> None:
    url = f"ws://127.0.0.1:{port}/"
    async with websockets.connect(
        url, subprotocols=["hydrogen-protocol"], additional_headers={"Authorization": f"Key {key}"}
    ) as ws:
        assert ws.subprotocol == "hydrogen-protocol", ws.subprotocol
        # The server never speaks first: the welcome comes right before the first answer.
        await ws.send(json.dumps({"type": "command", "id": "py-1", "channel": "system", "action": "ping"}))
        welcome = json.loads(await ws.recv())
        assert welcome["channel"] == "system" and welcome["action"] == "welcome", welcome
        assert welcome["data"]["role"] == "admin" and welcome["data"]["session_id"], welcome
        print("WELCOME ok", flush=True)
        r = json.loads(await ws.recv())
        assert r["id"] == "py-1" and r["data"] == {"pong": True}, r
        print("PING ok", flush=True)
        await ws.send(json.dumps({"type": "command", "id": "py-2", "channel": "system", "action": "status"}))
        r = json.loads(await ws.recv())
        assert r["data"]["status"]["running"] is True, r
        print("STATUS ok", flush=True)
        await ws.send("{broken")
        r = json.loads(await ws.recv())
        assert r["error"]["code"] == "invalid_message", r
        print("BADJSON ok", flush=True)
        # A sensitive action signed the way the README says (HMAC-SHA256 over id, timestamp,
        # channel, action and the compact, key-sorted JSON of data).
        ts = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        # 1e-07 and 2**70 as Python writes them: the server must verify over those digits
        # (issue #11 §6.2; f64 would turn them into 1e-7 and 1.1805916207174113e+21).
        data = {"connection_id": 999999, "reason": "caf\u00e9", "tiny": 1e-07, "huge": 2**70}
        compact = json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        payload = "\n".join(["py-3", ts, "system", "disconnect", compact]).encode()
        sig = hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()
        await ws.send(json.dumps({"type": "command", "id": "py-3", "timestamp": ts, "channel": "system",
                                  "action": "disconnect", "data": data, "auth": {"signature": sig}}))
        r = json.loads(await ws.recv())
        assert r["error"]["code"] == "invalid_message" and "no connection" in r["error"]["message"], r
        print("SIGNED ok", flush=True)
        # Browsers authenticate late: the same over a second, credential-less connection.
        async with websockets.connect(url, subprotocols=["hydrogen-protocol"]) as late:
            await late.send(json.dumps({"type": "command", "id": "a", "channel": "system", "action": "auth", "data": {"key": key}}))
            r = json.loads(await late.recv())
            assert r["status"] == "ok" and r["data"]["role"] == "admin", r
        print("LATEAUTH ok", flush=True)
        print("READY", flush=True)
        try:
            await asyncio.wait_for(ws.recv(), timeout=20)
        except websockets.ConnectionClosed as e:
            print(f"CLOSE {e.rcvd.code} {e.rcvd.reason}", flush=True)
            return
        raise SystemExit("expected the server to close the connection")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
