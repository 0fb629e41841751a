# dm-arepl: top-level commands. `make demo` runs the main job, `make test` the tests.
# (When Kbuild descends into this directory it reads ./Kbuild, not this file.)

SHELL := /bin/bash
# rustup's cargo and the tools cargo installs (bindgen) live here.
export PATH := $(HOME)/.cargo/bin:$(PATH)
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
# Scenario filter for the VM suite, e.g. `make vm-test ONLY=bad-tables`.
ONLY ?=

# Installation layout: `make install DESTDIR=... PREFIX=...` (see "Install" in README.md).
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
UNITDIR ?= /lib/systemd/system
# The kernel tree install-module builds and installs for: the running kernel's by
# default; the test kernel's is printed by scripts/build-kernel.sh.
KDIR ?= /lib/modules/$(shell uname -r)/build
INSTALL_MOD_DIR ?= updates
# Installed in sbin; the test tools arepl-send, arepl-lying-proxy and arepl-stamp stay in
# target/release.
INSTALL_BINS := arepl replicad
UNITS := $(wildcard packaging/systemd/*.service packaging/systemd/*.socket packaging/systemd/*.timer)
DOCS_DIR := target/docs
AREPL_VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n1)

.PHONY: all deps kernel module userspace check cargo-test fuzz-smoke fuzz fuzz-corpus vm-test test \
	demo bench bench-quick torture clean

all: module userspace

deps:
	scripts/install-deps.sh

kernel: deps
	scripts/build-kernel.sh >/dev/null

# Rust goes through the kernel's clippy run (CLIPPY=1). Warnings fail the build:
# compilers and clippy via -Werror/-Dwarnings, objtool and modpost via the log.
module: kernel
	$(MAKE) -C "$$(scripts/build-kernel.sh)" M=$(CURDIR) modules CLIPPY=1 \
		KCFLAGS=-Werror KRUSTFLAGS=-Dwarnings 2>&1 | tee kmod/build.log
	@! grep -i warning kmod/build.log

userspace: deps
	$(CARGO) build --release --workspace --locked

check: deps
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	MAKE="$(MAKE)" tests/install-check.sh

cargo-test: deps
	$(CARGO) test --workspace --locked

# Fuzzing of replicad's receive path (fuzz/, scripts/fuzz.sh), one target at a time:
# 30 s each in `make test`, FUZZ_SECONDS each in `make fuzz`.
FUZZ_TARGETS := $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))
FUZZ_SECONDS ?= 600
fuzz-smoke: deps
	for target in $(FUZZ_TARGETS); do scripts/fuzz.sh "$$target" 30; done

fuzz: deps
	for target in $(FUZZ_TARGETS); do scripts/fuzz.sh "$$target" $(FUZZ_SECONDS); done

# Rewrites fuzz/corpus/ from fuzz/src/seeds.rs.
fuzz-corpus: deps
	CARGO_TARGET_DIR=target/fuzz cargo +nightly run --release --locked -q \
		--manifest-path fuzz/Cargo.toml --bin seed-corpus

vm-test: module userspace
	scripts/vm-test.sh "$(ONLY)"

test: check cargo-test fuzz-smoke vm-test

demo: module userspace
	scripts/demo.sh

# Rewrites docs/benchmarks.{md,png,jsonl}; BENCH_NO_DOCS=1 keeps them in target/bench.
bench: module userspace
	scripts/bench.sh $(if $(BENCH_NO_DOCS),--no-docs)

# The write-path regime in a few minutes, printed as ratios to dm-linear; BASELINE=path
# of a dm-arepl.ko from another commit measures it alongside.
BASELINE ?=
bench-quick: module userspace
	scripts/bench-quick.sh $(BASELINE)

# Fault injection with write-order checks: `make torture SEED=7 N=20` reproduces a run.
SEED ?= $(shell date +%s)
N ?= 20
torture: module userspace
	scripts/torture.sh "$(SEED)" "$(N)"

# Installing. `install` builds what it installs (cargo only: no `deps`); to install as
# root what you built as yourself: `make build-userspace docs`, then
# `sudo make install NO_BUILD=1`. The module needs a kernel tree (KDIR); DKMS is the
# alternative to install-module (`make dkms-source`, docs/packaging.md).
.PHONY: build-userspace docs install install-userspace install-module dkms-source \
	uninstall uninstall-userspace uninstall-module

build-userspace:
	$(CARGO) build --release --workspace --locked

# Man pages and shell completions from the clap definitions (crate arepl-docs).
docs:
	rm -rf $(DOCS_DIR)
	$(CARGO) run --release --locked -q -p arepl-docs -- $(DOCS_DIR) >/dev/null

install: install-userspace install-module

install-userspace: $(if $(NO_BUILD),,build-userspace docs)
	install -d "$(DESTDIR)$(SBINDIR)" "$(DESTDIR)$(MANDIR)/man8" "$(DESTDIR)$(BASHCOMPDIR)" \
		"$(DESTDIR)$(ZSHCOMPDIR)" "$(DESTDIR)$(FISHCOMPDIR)" "$(DESTDIR)$(UNITDIR)" \
		"$(DESTDIR)/etc/arepl"
	install -m 755 $(addprefix target/release/,$(INSTALL_BINS)) "$(DESTDIR)$(SBINDIR)/"
	install -m 644 $(DOCS_DIR)/man/*.8 "$(DESTDIR)$(MANDIR)/man8/"
	for cmd in $(INSTALL_BINS); do \
		install -m 644 "$(DOCS_DIR)/completions/$$cmd.bash" "$(DESTDIR)$(BASHCOMPDIR)/$$cmd"; \
		install -m 644 "$(DOCS_DIR)/completions/_$$cmd" "$(DESTDIR)$(ZSHCOMPDIR)/_$$cmd"; \
		install -m 644 "$(DOCS_DIR)/completions/$$cmd.fish" "$(DESTDIR)$(FISHCOMPDIR)/$$cmd.fish"; \
	done
	for unit in $(UNITS); do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' "$$unit" >"$(DESTDIR)$(UNITDIR)/$${unit##*/}"; \
		chmod 644 "$(DESTDIR)$(UNITDIR)/$${unit##*/}"; \
	done
	$(if $(DESTDIR),,[[ ! -d /run/systemd/system ]] || systemctl daemon-reload)

install-module:
	$(MAKE) -C "$(KDIR)" M=$(CURDIR) modules
	$(MAKE) -C "$(KDIR)" M=$(CURDIR) modules_install INSTALL_MOD_DIR=$(INSTALL_MOD_DIR) \
		INSTALL_MOD_PATH=$(abspath $(DESTDIR)) $(if $(DESTDIR),DEPMOD=true)
	release=$$(cat "$(KDIR)/include/config/kernel.release"); \
		$(if $(DESTDIR),: no depmod in a DESTDIR,depmod -a "$$release")

# The module's sources for DKMS in /usr/src/dm-arepl-VERSION: dkms.conf, both Kbuild
# files, kmod/ less what the build generates, and the arepl-core files kmod compiles
# through #[path] (relative to kmod/, so the tree keeps the repository's layout).
DKMS_DIR = $(DESTDIR)/usr/src/dm-arepl-$(AREPL_VERSION)
KMOD_SOURCES = kmod/Kbuild $(filter-out kmod/bindings_generated.rs %.mod.c, \
	$(wildcard kmod/*.rs kmod/*.c kmod/*.h))
KMOD_SHARED_SOURCES = $(shell sed -n 's|^ *\#\[path = "\.\./\([^"]*\)"\].*|\1|p' kmod/*.rs | sort -u)

dkms-source:
	grep -qx 'PACKAGE_VERSION="$(AREPL_VERSION)"' dkms.conf || \
		{ echo 'dkms.conf: PACKAGE_VERSION must be the workspace version, "$(AREPL_VERSION)"' >&2; exit 1; }
	rm -rf "$(DKMS_DIR)"
	install -d "$(DKMS_DIR)/kmod"
	install -m 644 dkms.conf Kbuild "$(DKMS_DIR)/"
	install -m 644 $(KMOD_SOURCES) "$(DKMS_DIR)/kmod/"
	for file in $(KMOD_SHARED_SOURCES); do install -D -m 644 "$$file" "$(DKMS_DIR)/$$file"; done

uninstall: uninstall-userspace uninstall-module

# The configuration in /etc/arepl stays; the directory goes only if it is empty.
uninstall-userspace:
	for cmd in $(INSTALL_BINS); do \
		rm -f "$(DESTDIR)$(SBINDIR)/$$cmd" "$(DESTDIR)$(MANDIR)/man8/$$cmd.8" \
			"$(DESTDIR)$(MANDIR)/man8/$$cmd-"*.8 "$(DESTDIR)$(BASHCOMPDIR)/$$cmd" \
			"$(DESTDIR)$(ZSHCOMPDIR)/_$$cmd" "$(DESTDIR)$(FISHCOMPDIR)/$$cmd.fish"; \
	done
	for unit in $(notdir $(UNITS)); do rm -f "$(DESTDIR)$(UNITDIR)/$$unit"; done
	rmdir --ignore-fail-on-non-empty "$(DESTDIR)/etc/arepl" 2>/dev/null || true
	$(if $(DESTDIR),,[[ ! -d /run/systemd/system ]] || systemctl daemon-reload)

uninstall-module:
	release=$$(cat "$(KDIR)/include/config/kernel.release"); \
		rm -f "$(DESTDIR)/lib/modules/$$release/$(INSTALL_MOD_DIR)/kmod/dm-arepl.ko"; \
		$(if $(DESTDIR),: no depmod in a DESTDIR,depmod -a "$$release")

clean:
	$(CARGO) clean
	-$(MAKE) -C "$$(scripts/build-kernel.sh)" M=$(CURDIR) clean
