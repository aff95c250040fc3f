# keyturn's commands. Each target installs what it needs (scripts/setup) and is safe to rerun.
#   make demo   bring up PostgreSQL + moto, rotate secrets through the real Lambda binary
#   make test   formatting, lints, unit and integration tests (what CI runs)
#   make bench  cold start, warm rotation and binary size, release build
#   make release  the release binaries, and the CLI as dist/keyturn-<version>-<target>.tar.gz

# Outside the clone so CI on the same machine builds incrementally.
export CARGO_TARGET_DIR ?= /var/cache/keyturn-target
CARGO ?= cargo
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
CLI_ARCHIVE := keyturn-$(VERSION)-x86_64-unknown-linux-gnu.tar.gz

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

# The CLI is built apart (it is not a default member), as sam build builds each function:
# its features (aws-config's sso) are then not unified into the functions' binaries.
release:
	$(CARGO) build --release --bin rotate-database --bin rotate-iam-key --bin issue-credentials --bin reap-leases --bin bench
	$(CARGO) build --release -p keyturn-cli
	mkdir -p dist
	tar -C $(CARGO_TARGET_DIR)/release -czf dist/$(CLI_ARCHIVE) keyturn
	cd dist && sha256sum $(CLI_ARCHIVE) > $(CLI_ARCHIVE).sha256

bench: setup release
	$(CARGO_TARGET_DIR)/release/bench
