# faas — developer and install entry points. Run as root: faas builds sandboxes.
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080

.PHONY: all deps build run test clippy check doctor install uninstall vm-test bench

all: build

# What the sandboxes run: the system interpreters (not a pyenv or nvm shim).
deps:
	@if ! [ -x /usr/bin/python3 ] || ! [ -x /usr/bin/node ]; then \
		apt-get update && apt-get install -y --no-install-recommends python3 nodejs; fi

build:
	$(CARGO) build --release --locked

# Rebuilt when a source is newer; where there are no sources (an install from a copied
# tree, as the VM tests do), the binary that is there is used.
target/release/faas: $(wildcard Cargo.toml Cargo.lock) $(shell find src -name '*.rs' 2>/dev/null)
	$(CARGO) build --release --locked

# Serve the example functions in config/functions on $(LISTEN), in the foreground.
run: deps build
	./target/release/faas --config config/faas.toml --functions config/functions \
		--wrappers wrappers --state-dir /run/faas-dev serve --listen $(LISTEN)

clippy:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Everything: lints, unit tests, the unprivileged and the privileged integration tests,
# and the wrappers run on their own.
test: deps clippy
	bash tests/wrappers/run-standalone.sh
	$(CARGO) test --locked -- --include-ignored
	bash tests/unprivileged.sh

check: build
	./target/release/faas --config config/faas.toml check config/functions

doctor: build
	./target/release/faas --config config/faas.toml doctor

install: target/release/faas
	install -D -m 0755 target/release/faas $(DESTDIR)$(PREFIX)/bin/faas
	install -D -m 0644 wrappers/python.py $(DESTDIR)$(PREFIX)/lib/faas/wrappers/python.py
	install -D -m 0644 wrappers/node.js $(DESTDIR)$(PREFIX)/lib/faas/wrappers/node.js
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/faas/README.md
	install -D -m 0644 wrappers/README.md $(DESTDIR)$(PREFIX)/share/doc/faas/wrappers.md
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/faas/functions
	[ -e $(DESTDIR)$(SYSCONFDIR)/faas/faas.toml ] || install -m 0644 config/faas.toml $(DESTDIR)$(SYSCONFDIR)/faas/faas.toml
	cp -rn config/functions/. $(DESTDIR)$(SYSCONFDIR)/faas/functions/
	chmod -R u=rwX,go=rX $(DESTDIR)$(SYSCONFDIR)/faas/functions
	install -D -m 0644 systemd/faas.socket $(DESTDIR)$(UNITDIR)/faas.socket
	install -D -m 0644 systemd/faas-admin.socket $(DESTDIR)$(UNITDIR)/faas-admin.socket
	install -D -m 0644 systemd/faas.service $(DESTDIR)$(UNITDIR)/faas.service
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload && systemctl enable --now faas.socket faas-admin.socket; \
		echo "faas.socket listens on :8080; try: curl 'http://127.0.0.1:8080/hello?name=ada'"; fi

# Everything but $(SYSCONFDIR)/faas. /run/faas too: faas.service keeps its runtime directory
# across stops (RuntimeDirectoryPreserve=yes), so sandbox roots and the admin socket's file
# would otherwise stay until a reboot.
uninstall:
	-systemctl disable --now faas.socket faas-admin.socket faas.service
	rm -f $(PREFIX)/bin/faas $(UNITDIR)/faas.socket $(UNITDIR)/faas-admin.socket $(UNITDIR)/faas.service
	rm -rf $(PREFIX)/lib/faas $(PREFIX)/share/doc/faas
	rm -rf --one-file-system /run/faas
	@if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "left in place: $(SYSCONFDIR)/faas (your functions and settings)"

vm-test: build
	bash tests/vm/run.sh

bench:
	bash bench/run.sh
