# dm-arepl: top-level commands. `make demo` runs the main job, `make test` the tests.
# (When Kbuild descends into this directory it reads ./Kbuild, not this file.)

SHELL := /bin/bash
# rustup's cargo and the tools cargo installs (bindgen) live here.
export PATH := $(HOME)/.cargo/bin:$(PATH)
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
# Scenario filter for the VM suite, e.g. `make vm-test ONLY=bad-tables`.
ONLY ?=

.PHONY: all deps kernel module userspace check cargo-test vm-test test demo bench clean

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
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

cargo-test: deps
	$(CARGO) test --workspace --locked

vm-test: module userspace
	scripts/vm-test.sh "$(ONLY)"

test: check cargo-test vm-test

demo: module userspace
	scripts/demo.sh

bench: module userspace
	scripts/bench.sh

clean:
	$(CARGO) clean
	-$(MAKE) -C "$$(scripts/build-kernel.sh)" M=$(CURDIR) clean
