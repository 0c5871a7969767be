SHELL := /bin/bash
# The two commands that matter: `make run` and `make test`. Both set up what they need first.
.PHONY: run test setup build release lint bench fmt clean

CONFIG ?= config/hearken.toml

setup:
	@scripts/setup.sh

build: setup
	@cargo build --quiet --release --bins

run: build
	@CONFIG=$(CONFIG) scripts/run.sh

test: setup
	@cargo build --quiet --bins --features testing
	@cargo test --quiet --all-targets --features testing 2>&1 | grep -v '^$$' ; exit $${PIPESTATUS[0]}

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --features testing -- -D warnings

bench: setup
	@scripts/bench-relay.sh

clean:
	cargo clean
