# faas — developer and install entry points. Run as root: faas builds sandboxes.
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml 2>/dev/null | head -n 1)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEBDIR := target/deb
DEB := $(DEBDIR)/faas_$(VERSION)_$(DEB_ARCH).deb

.PHONY: all deps test-deps build run test clippy check doctor man completions install uninstall deb deb-deps vm-test bench

all: build

# What the sandboxes run: the system interpreters (not a pyenv or nvm shim).
deps:
	@if ! [ -x /usr/bin/python3 ] || ! [ -x /usr/bin/node ]; then \
		apt-get update && apt-get install -y --no-install-recommends python3 nodejs; fi

# And for the tests: numpy, which tests/warm.rs preloads in a zygote (python3-numpy, the
# module a Debian user gets).
test-deps: deps
	@if ! /usr/bin/python3 -c 'import numpy' 2>/dev/null; then \
		apt-get update && apt-get install -y --no-install-recommends python3-numpy; fi

build:
	$(CARGO) build --release --locked

# Rebuilt when a source is newer; where there are no sources (an install from a copied
# tree, as the VM tests do), the binary that is there is used. The same cargo build makes
# target/release/libfaas_zygote.so (zygote/, a workspace member): the warm zygote's child steps.
target/release/faas: $(wildcard Cargo.toml Cargo.lock zygote/Cargo.toml) $(shell find src zygote/src -name '*.rs' 2>/dev/null)
	$(CARGO) build --release --locked

target/release/libfaas_zygote.so: target/release/faas

# Serve the example functions in config/functions on $(LISTEN), in the foreground.
run: deps build
	./target/release/faas --config config/faas.toml --functions config/functions \
		--wrappers wrappers --state-dir /run/faas-dev serve --listen $(LISTEN)

clippy:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Everything: lints, unit tests, the unprivileged and the privileged integration tests,
# and the wrappers run on their own.
test: test-deps clippy
	bash tests/wrappers/run-standalone.sh
	$(CARGO) test --locked -- --include-ignored
	bash tests/unprivileged.sh

check: build
	./target/release/faas --config config/faas.toml check config/functions

doctor: build
	./target/release/faas --config config/faas.toml doctor

# faas(1) and faas-SUBCOMMAND(1) from the clap definition (the hidden `faas man`), beside the
# hand-written faas.toml(5) and faas-function(5) from man/.
man: target/release/faas
	rm -rf target/man
	target/release/faas man target/man/man1
	install -D -m 0644 -t target/man/man5 man/faas.toml.5 man/faas-function.5

# bash, zsh and fish completion from the clap definition (the hidden `faas completions`).
completions: target/release/faas
	mkdir -p target/completions
	target/release/faas completions bash >target/completions/faas.bash.tmp
	target/release/faas completions zsh >target/completions/_faas.tmp
	target/release/faas completions fish >target/completions/faas.fish.tmp
	cd target/completions && for f in faas.bash _faas faas.fish; do mv $$f.tmp $$f; done

install: target/release/faas target/release/libfaas_zygote.so man completions
	install -D -m 0755 target/release/faas $(DESTDIR)$(PREFIX)/bin/faas
	# A private library, found by the daemon in ../lib/faas beside its bin/ (no SONAME, not on
	# the loader's path: only the zygote loads it, from the fd the daemon sends).
	install -D -m 0644 target/release/libfaas_zygote.so $(DESTDIR)$(PREFIX)/lib/faas/libfaas_zygote.so
	install -D -m 0644 wrappers/python.py $(DESTDIR)$(PREFIX)/lib/faas/wrappers/python.py
	install -D -m 0644 wrappers/zygote.py $(DESTDIR)$(PREFIX)/lib/faas/wrappers/zygote.py
	install -D -m 0644 wrappers/node.js $(DESTDIR)$(PREFIX)/lib/faas/wrappers/node.js
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/faas/README.md
	install -D -m 0644 wrappers/README.md $(DESTDIR)$(PREFIX)/share/doc/faas/wrappers.md
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/man/man1 target/man/man1/*.1
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/man/man5 target/man/man5/*.5
	install -D -m 0644 target/completions/faas.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/faas
	install -D -m 0644 target/completions/_faas $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_faas
	install -D -m 0644 target/completions/faas.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/faas.fish
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
	rm -f $(PREFIX)/share/man/man1/faas.1 $(PREFIX)/share/man/man1/faas-*.1 \
		$(PREFIX)/share/man/man5/faas.toml.5 $(PREFIX)/share/man/man5/faas-function.5 \
		$(PREFIX)/share/bash-completion/completions/faas $(PREFIX)/share/zsh/site-functions/_faas \
		$(PREFIX)/share/fish/vendor_completions.d/faas.fish
	rm -rf --one-file-system /run/faas
	@if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "left in place: $(SYSCONFDIR)/faas (your functions and settings)"

# The Debian package, $(DEB), with Debian's own tooling: dpkg-buildpackage and debhelper
# (debian/rules). Not cargo-deb: debhelper comes from apt in seconds (cargo-deb is ~100 crates
# to compile), and it is what Debian itself uses, so the maintainer scripts are exactly
# dh_installsystemd's (deb-systemd-helper, deb-systemd-invoke), conffiles are dh_installdeb's,
# Depends comes from dh_shlibdeps (${shlibs:Depends}), and lintian checks against the same
# rules. The build is `make build man completions` inside it (debian/rules); the .deb, its
# .buildinfo and .changes go to $(DEBDIR), not to the parent directory.
deb: deb-deps
	CARGO="$(CARGO)" DEB_DESTDIR=$(DEBDIR) dpkg-buildpackage --build=binary --no-sign \
		--buildinfo-option=-u$(DEBDIR) --buildinfo-file=$(DEBDIR)/faas_$(VERSION)_$(DEB_ARCH).buildinfo \
		--changes-option=-u$(DEBDIR) --changes-file=$(DEBDIR)/faas_$(VERSION)_$(DEB_ARCH).changes
	@echo "built $(DEB); install it with: apt install ./$(DEB)"

deb-deps:
	@if ! command -v dpkg-buildpackage >/dev/null || ! command -v dh >/dev/null; then \
		apt-get update && apt-get install -y --no-install-recommends dpkg-dev debhelper; fi

# The VM tier installs both: `make install` from this tree, then the package.
vm-test: build deb
	FAAS_DEB=$(DEB) bash tests/vm/run.sh

bench:
	bash bench/run.sh
