#!/usr/bin/env bash
# Memory safety against the release build (make memcheck, part of make hardening), under
# valgrind memcheck:
#  1. the integration suite: every test binary of `cargo test --release`, one test at a time
#     (valgrind slows everything ~20x; the timing bounds of the tests assume a real CPU);
#  2. the release server process while the soak driver (30 s, 20 clients: connects,
#     subscriptions, commands, reliable events, abrupt drops, resumes) uses it, then SIGTERM.
# Any memcheck error or definitely-lost block, or any failing test, fails the run.
# Suppressions: ring's assembly (ring.supp) and one false positive in http's header-name
# parser (http.supp); each file says why. Logs: target/memcheck/.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }
OUT=target/memcheck
rm -rf "$OUT" && mkdir -p "$OUT"
VALGRIND=(valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite
  --errors-for-leak-kinds=definite --max-threads=4000
  --suppressions=tests/valgrind/ring.supp --suppressions=tests/valgrind/http.supp)

cargo build --release --bin hydrogen-ws --example soak
mapfile -t BINARIES < <(cargo test --release --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
failed=0
for bin in "${BINARIES[@]}"; do
    name=$(basename "$bin")
    if "${VALGRIND[@]}" --log-file="$OUT/$name.vg" "$bin" --test-threads=1 > "$OUT/$name.out" 2>&1; then
        status=ok
    else
        status="FAILED (exit $?)"; failed=1
    fi
    echo "memcheck: $name: $status; $(grep -ho 'test result: [^;]*; [0-9]* failed' "$OUT/$name.out" | head -1); $(grep -ho 'ERROR SUMMARY: [0-9]* errors' "$OUT/$name.vg" | head -1)"
done

echo "memcheck: the release server under the soak driver (30 s x 20 clients)"
if SOAK_SERVER_WRAPPER="${VALGRIND[*]} --log-file=$OUT/server.vg" SOAK_SECONDS=30 SOAK_CLIENTS=20 \
    target/release/examples/soak > "$OUT/soak.out" 2>&1; then
    echo "memcheck: server: ok; $(grep -ho 'ERROR SUMMARY: [0-9]* errors' "$OUT/server.vg"); $(grep -h 'reliable events received' "$OUT/soak.out")"
else
    echo "memcheck: server: FAILED"; tail -5 "$OUT/soak.out"; failed=1
fi
if [ "$failed" -ne 0 ]; then
    echo "memcheck: FAILED: see $OUT/*.vg (valgrind) and $OUT/*.out (tests)"
    exit 1
fi
echo "memcheck: clean: ${#BINARIES[@]} test binaries and the server, 0 errors, 0 bytes definitely lost"
