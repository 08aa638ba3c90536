#!/usr/bin/env bash
# The Autobahn|Testsuite fuzzing client against the release server in EchoMode. Installs the
# suite (Python 2.7 from pyenv, in .autobahn-venv) on first use. Every case, the 216
# permessage-deflate ones (12.*, 13.*) included, must be OK, NON-STRICT or INFORMATIONAL;
# prints the counts and exits 1 naming the failing cases otherwise. Report: target/autobahn/index.html.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.autobahn-venv
OUT=target/autobahn
if [ ! -x "$VENV/bin/wstest" ]; then
    PY2="$(pyenv root)/versions/2.7.18/bin/python2.7"
    [ -x "$PY2" ] || { echo "autobahn: needs pyenv's Python 2.7.18 at $PY2" >&2; exit 1; }
    python3 -m pip install --quiet "virtualenv==20.21.1"
    python3 -m virtualenv --quiet -p "$PY2" "$VENV"
    "$VENV/bin/pip" install --quiet autobahntestsuite
fi
[ -x target/release/hydrogen-ws ] || cargo build --release
rm -rf "$OUT" && mkdir -p "$OUT"
target/release/hydrogen-ws --config tests/autobahn/server.json 2> "$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
PORT=""
for _ in $(seq 1 100); do
    PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT/server.log" | head -1)
    [ -n "$PORT" ] && break
    sleep 0.1
done
[ -n "$PORT" ] || { echo "autobahn: the server did not start" >&2; cat "$OUT/server.log" >&2; exit 1; }
cat > "$OUT/fuzzingclient.json" <<JSON
{
  "outdir": "$PWD/$OUT/reports",
  "servers": [{"agent": "hydrogen-ws", "url": "ws://127.0.0.1:$PORT"}],
  "cases": ["*"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
started=$(date +%s)
(cd "$OUT" && "../../$VENV/bin/wstest" -m fuzzingclient -s fuzzingclient.json > wstest.log 2>&1)
echo "autobahn: wstest ran $(( $(date +%s) - started )) s"
kill -TERM $SERVER; wait $SERVER || { echo "autobahn: server exit code $?" >&2; exit 1; }
trap - EXIT
python3 - "$OUT/reports/index.json" <<'PY'
import collections, json, sys
cases = json.load(open(sys.argv[1]))["hydrogen-ws"]
counts = collections.Counter(c["behavior"] for c in cases.values())
close = collections.Counter(c["behaviorClose"] for c in cases.values())
print("autobahn: %d cases: %s; close behaviour: %s" % (len(cases), dict(counts), dict(close)))
good = {"OK", "NON-STRICT", "INFORMATIONAL"}
bad = sorted((k for k, c in cases.items() if c["behavior"] not in good or c["behaviorClose"] not in good),
             key=lambda k: [int(p) for p in k.split(".")])
if bad:
    print("autobahn: FAILED cases: " + ", ".join(bad))
    sys.exit(1)
print("autobahn: all cases OK, NON-STRICT or INFORMATIONAL")
PY
