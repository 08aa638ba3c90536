# hydrogen-ws — the whole set-up on a fresh machine is `make run` and `make test`.

SHELL   := /bin/bash

CARGO   ?= cargo
PYTHON  ?= python3
VENV    := .venv
VENV_PY := $(abspath $(VENV))/bin/python
# TARGET=<rust target triple>: cross-built (make cross); the binary install copies.
TARGET  ?=
BIN     := target/$(if $(TARGET),$(TARGET)/)release/hydrogen-ws
KEYFILE := .hydrogen-api-key

.PHONY: all build run test lint features bench hardening autobahn memcheck fuzz soak clean \
        cross cross-check install

all: build

build:
	$(CARGO) build --release

# Starts the server on the shipped config.json. The server itself refuses to start without
# HYDROGEN_API_KEY; for a first run on a fresh machine we generate a random key once, keep it
# in $(KEYFILE) (mode 600, git-ignored) and say where it is.
run: build
	@if [ -z "$$HYDROGEN_API_KEY" ] && [ ! -s $(KEYFILE) ]; then (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > $(KEYFILE)); fi
	@if [ -n "$$HYDROGEN_API_KEY" ]; then where='$$HYDROGEN_API_KEY'; key_cmd='"$$HYDROGEN_API_KEY"'; \
	  else where="$(KEYFILE) (HYDROGEN_API_KEY is unset; generated once, mode 600)"; key_cmd='"$$(cat $(KEYFILE))"'; fi; \
	  echo "hydrogen-ws on ws://127.0.0.1:5001/ (config.json; Port falls back upwards if 5001 is taken)"; \
	  echo "  subprotocol: hydrogen-protocol   key: $$where"; \
	  echo "  status page: http://127.0.0.1:5001/ (log in with the key)   metrics: /metrics (send the key)"; \
	  echo "  clients send 'Authorization: Key <key>'; try it from another shell:"; \
	  echo "  echo '{\"type\":\"command\",\"id\":\"1\",\"channel\":\"system\",\"action\":\"status\"}' | ./$(BIN) client ws://127.0.0.1:5001/ --key $$key_cmd"
	@if [ -z "$$HYDROGEN_API_KEY" ]; then HYDROGEN_API_KEY=$$(cat $(KEYFILE)) exec ./$(BIN) --config config.json; \
	  else exec ./$(BIN) --config config.json; fi

# The Python packages the tests use (clients that are not ours, a Prometheus parser).
# websockets >= 14 for additional_headers (README); prometheus-client's parser reads /metrics.
$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

# websocat (Hydrogen's own status test runs it as written): built once into .tools/.
WEBSOCAT := .tools/bin/websocat
$(WEBSOCAT):
	$(CARGO) install websocat --locked --quiet --root .tools

# Node's ws and puppeteer-core (tests/browsers.rs), from tests/clients/node/package-lock.json.
NODE_DIR := tests/clients/node
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --silent
	touch $@

test: $(VENV)/.installed $(WEBSOCAT) $(NODE_DIR)/node_modules/.installed
	@command -v openssl >/dev/null || (apt-get update && apt-get install -y openssl)  # RSA key for the JWT tests
	@command -v jq >/dev/null || (apt-get update && apt-get install -y jq)  # Hydrogen's status test pipes to jq
	@command -v systemd-analyze >/dev/null || (apt-get update && apt-get install -y systemd)  # tests/install.rs verifies the unit
	@command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)  # tests/browsers.rs
	@command -v mosquitto >/dev/null && command -v mosquitto_pub >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients)  # tests/mqtt.rs
	HWS_PYTHON=$(VENV_PY) HWS_WEBSOCAT=$(abspath $(WEBSOCAT)) HWS_BROWSERS=1 HWS_CHROMIUM=$$(command -v chromium) $(CARGO) test --no-fail-fast  # every test binary runs, even after a failure
	# and every integration test again with permessage-deflate declined by the server (issue #16)
	HWS_COMPRESSION=off HWS_PYTHON=$(VENV_PY) HWS_WEBSOCAT=$(abspath $(WEBSOCAT)) HWS_BROWSERS=1 HWS_CHROMIUM=$$(command -v chromium) $(CARGO) test --no-fail-fast --tests

# .ci/layers.py: no import cycle between files, no function over 80 lines, unsafe only
# with a SAFETY note and #![forbid(unsafe_code)] wherever there is none (issue #13).
lint: features
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(PYTHON) .ci/layers.py

# Every feature set a board may build (issue #15): lint-clean, and the minimal one's tests
# that are about what it leaves out (tests/binary.rs, tests/client.rs).
features:
	for f in "--no-default-features" "--no-default-features --features tls" "--no-default-features --features jwt"; do \
	  $(CARGO) clippy --all-targets $$f -- -D warnings || exit 1; done
	$(CARGO) test --no-default-features --test binary --test client

# The fan-out rows run the baseline server of examples/fanout_baseline.rs beside ours.
bench: build
	$(CARGO) build --release --examples
	$(CARGO) run --release --example bench

# The long checks of issue #5 (make test runs the fast ones, tests/faults.rs among them).
# Autobahn|Testsuite against the server in EchoMode; installs the suite on first use.
autobahn: build
	bash tests/autobahn/run.sh

# valgrind memcheck over every test binary of the release integration suite, then on the
# release server under the soak driver (tests/valgrind/run.sh).
memcheck: build $(VENV)/.installed $(WEBSOCAT) $(NODE_DIR)/node_modules/.installed
	HWS_PYTHON=$(VENV_PY) HWS_WEBSOCAT=$(abspath $(WEBSOCAT)) HWS_BROWSERS=1 bash tests/valgrind/run.sh

# Soak: SOAK_SECONDS (600) of churn at SOAK_CLIENTS (500); prints the figures, fails on a lost
# reliable event, RSS growth over 10 % after warm-up, or threads/descriptors not back at rest.
soak: build
	$(CARGO) run --release --example soak

hardening: autobahn memcheck

# cargo-fuzz (libFuzzer + AddressSanitizer) on the envelope parser, the config loader and the
# handshake, FUZZ_SECONDS each (5 min). The stable toolchain is enough with RUSTC_BOOTSTRAP=1
# (cargo-fuzz passes -Z flags). Seeds: tests/fuzz/seeds; what it learns: tests/fuzz/corpus;
# a crash stops the run and is written to tests/fuzz/artifacts/<target>/, and the end of the
# target's log (the sanitizer's report and stack) is printed; full logs in target/fuzz/.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := envelope config handshake deflate mqtt
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@mkdir -p target/fuzz; for t in $(FUZZ_TARGETS); do \
	  mkdir -p tests/fuzz/corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: target/fuzz/$$t.log)"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir tests/fuzz -O $$t \
	    tests/fuzz/corpus/$$t tests/fuzz/seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) \
	    > target/fuzz/$$t.log 2>&1; status=$$?; \
	  grep -E "^(Done|SUMMARY|INFO: Running)|harness" target/fuzz/$$t.log; \
	  test $$status -eq 0 || { tail -60 target/fuzz/$$t.log; echo "fuzz: $$t FAILED"; exit 1; }; \
	done; echo "fuzz: every target ran clean"

# Board builds (README, "On a board"): `make cross TARGET=aarch64-unknown-linux-gnu` (or
# armv7-unknown-linux-gnueabihf); CARGO_FLAGS=--no-default-features for the minimal build.
# Installs the Rust target and Debian's cross gcc (the linker, .cargo/config.toml) if missing.
CARGO_FLAGS ?=
CROSS_GCC_aarch64-unknown-linux-gnu      := aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu
CROSS_GCC_armv7-unknown-linux-gnueabihf  := arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf
cross:
	@test -n "$(CROSS_GCC_$(TARGET))" || { echo "make cross TARGET=aarch64-unknown-linux-gnu or TARGET=armv7-unknown-linux-gnueabihf"; exit 2; }
	rustup target add $(TARGET)
	@gcc='$(CROSS_GCC_$(TARGET))'; command -v $${gcc%%:*} >/dev/null || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $${gcc##*:})
	$(CARGO) build --release --target $(TARGET) $(CARGO_FLAGS)
	@ls -l $(BIN)

# Builds for aarch64 and runs the result under qemu-aarch64 (with the arm64 C library from
# Debian's multiarch), answering system/ping from the Python client. Not part of make test.
cross-check: $(VENV)/.installed
	$(MAKE) cross TARGET=aarch64-unknown-linux-gnu
	@command -v qemu-aarch64 >/dev/null && test -e /lib/ld-linux-aarch64.so.1 || \
	  (dpkg --add-architecture arm64 && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-user libc6:arm64)
	$(VENV_PY) tests/cross/check.py target/aarch64-unknown-linux-gnu/release/hydrogen-ws qemu-aarch64 -L /

# Installs the binary, /etc/hydrogen-ws/{config.json,env} (never over the ones there) and
# the systemd unit and sysusers.d file; DESTDIR for staging, TARGET for a cross-built binary.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
BINDIR     := $(PREFIX)/bin
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
install:
	@test -x $(BIN) || { echo "no $(BIN): build it first (make build, or make cross TARGET=...)"; exit 2; }
	install -D -m 755 $(BIN) $(DESTDIR)$(BINDIR)/hydrogen-ws
	install -d -m 755 $(DESTDIR)$(SYSCONFDIR)/hydrogen-ws
	test -e $(DESTDIR)$(SYSCONFDIR)/hydrogen-ws/config.json || \
	  install -m 644 config.json $(DESTDIR)$(SYSCONFDIR)/hydrogen-ws/config.json
	test -e $(DESTDIR)$(SYSCONFDIR)/hydrogen-ws/env || \
	  install -m 600 deploy/env.example $(DESTDIR)$(SYSCONFDIR)/hydrogen-ws/env
	install -d -m 755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(PREFIX)/share/doc/hydrogen-ws
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@DOCDIR@|$(PREFIX)/share/doc/hydrogen-ws|g' \
	  deploy/hydrogen-ws.service > $(DESTDIR)$(UNITDIR)/hydrogen-ws.service
	chmod 644 $(DESTDIR)$(UNITDIR)/hydrogen-ws.service
	install -m 644 deploy/hydrogen-ws.sysusers $(DESTDIR)$(SYSUSERSDIR)/hydrogen-ws.conf
	install -m 644 README.md docs/protocol.md docs/behaviour.md $(DESTDIR)$(PREFIX)/share/doc/hydrogen-ws/
	@echo "installed under $(DESTDIR)$(PREFIX) and $(DESTDIR)$(SYSCONFDIR)/hydrogen-ws; next: set HYDROGEN_API_KEY in $(SYSCONFDIR)/hydrogen-ws/env, systemd-sysusers, systemctl enable --now hydrogen-ws"

clean:
	$(CARGO) clean
	rm -rf $(VENV) .autobahn-venv
