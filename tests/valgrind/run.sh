#!/usr/bin/env bash
# Memory checks against the release build (make hardening):
#  1. memcheck: the release server under valgrind while the soak driver (30 s, 20 clients:
#     connects, subscriptions, commands, reliable events, abrupt drops, resumes) uses it;
#     then SIGTERM. Any memcheck error or definitely-lost
#     block fails. Suppressions: ring's assembly (ring.supp) and one http false positive
#     (http.supp, explained there).
#  2. LeakSanitizer: the whole integration suite, release profile, built with
#     -Zsanitizer=leak (stable toolchain, RUSTC_BOOTSTRAP=1) in target/lsan; a leak fails it.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }
OUT=target/memcheck
mkdir -p "$OUT"
cargo build --release --bin hydrogen-ws --example soak
echo "memcheck: release server under valgrind, soak driver 30 s x 20 clients"
SOAK_SERVER_WRAPPER="valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite \
  --errors-for-leak-kinds=definite --suppressions=tests/valgrind/ring.supp --suppressions=tests/valgrind/http.supp --log-file=$OUT/server.log" \
  SOAK_SECONDS=30 SOAK_CLIENTS=20 target/release/examples/soak > "$OUT/soak.log" 2>&1 || {
    tail -20 "$OUT/soak.log"; grep -A20 "ERROR SUMMARY\|definitely" "$OUT/server.log" | head -60
    echo "memcheck: FAILED (see $OUT/server.log)"; exit 1; }
grep -E "definitely lost|ERROR SUMMARY" "$OUT/server.log" | sed 's/^==[0-9]*== /memcheck: /'
grep -E "reliable events received" "$OUT/soak.log" | sed 's/^/memcheck: soak /'

echo "lsan: integration suite, release, -Zsanitizer=leak"
HWS_PYTHON="${HWS_PYTHON:-.venv/bin/python}" RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=leak" \
  LSAN_OPTIONS="exitcode=23" cargo test --release --target x86_64-unknown-linux-gnu \
  --target-dir target/lsan --tests 2>&1 | tee "$OUT/lsan.log" | grep -E "^test result|LeakSanitizer|SUMMARY" || true
if grep -q "LeakSanitizer" "$OUT/lsan.log" || grep -q "FAILED\|error: test failed" "$OUT/lsan.log"; then
    echo "lsan: FAILED (see $OUT/lsan.log)"; exit 1
fi
echo "memcheck: clean (0 errors, 0 bytes definitely lost); lsan: no leaks"
