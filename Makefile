# keyturn's commands. Each target installs what it needs (scripts/setup) and is safe to rerun.
#   make demo   bring up PostgreSQL + moto, rotate secrets through the real Lambda binary
#   make test   formatting, lints, unit and integration tests (what CI runs)
#   make bench  cold start, warm rotation and binary size, release build

# Outside the clone so CI on the same machine builds incrementally.
export CARGO_TARGET_DIR ?= /var/cache/keyturn-target
CARGO ?= cargo

.PHONY: setup demo test lint bench build release

setup:
	./scripts/setup

build: setup
	$(CARGO) build --workspace --bins

demo: build
	$(CARGO_TARGET_DIR)/debug/demo

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings
	# Each function's feature set on its own, as SAM builds them one at a time.
	$(CARGO) check --quiet -p keyturn --no-default-features --features database --all-targets
	$(CARGO) check --quiet -p keyturn --no-default-features --features iam --all-targets
	$(CARGO) check --quiet -p keyturn --no-default-features --features lease --all-targets

# The end-to-end tests run the function binaries, which `cargo test` alone does not build.
test: setup lint
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

release:
	$(CARGO) build --release --bin rotate-database --bin rotate-iam-key --bin issue-credentials --bin reap-leases --bin bench
	# Apart, as sam build builds each function: the CLI's features (aws-config's sso)
	# are not unified into the functions' binaries.
	$(CARGO) build --release --bin keyturn

bench: setup release
	$(CARGO_TARGET_DIR)/release/bench
