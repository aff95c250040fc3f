# keyturn's commands. Each target installs what it needs (scripts/setup) and is safe to rerun.
#   make demo   bring up PostgreSQL, MariaDB and moto; rotate database secrets and an IAM key,
#               then issue, use, renew, revoke and reap every kind of dynamic credential
#               through the CLI, all through the real Lambda binaries
#   make test   formatting, lints, unit and integration tests (what CI runs), then the
#               PostgreSQL tests again on PostgreSQL 16 and 17
#   make test-pg16, make test-pg17   only the PostgreSQL tests, on that version
#   make bench  cold start, warm rotation and binary size, release build
#   make release  the release binaries, and the CLI as dist/keyturn-<version>-<target>.tar.gz

# Outside the clone so CI on the same machine builds incrementally.
export CARGO_TARGET_DIR ?= /var/cache/keyturn-target
CARGO ?= cargo
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
CLI_ARCHIVE := keyturn-$(VERSION)-x86_64-unknown-linux-gnu.tar.gz

# The modules of the integration test binary (tests/it) whose outcome depends on the
# PostgreSQL server (role statements and memberships, VALID UNTIL, what a secret's writer
# or a lease's user can do, what the statement log shows): rerun on each version of the
# matrix. The others reach PostgreSQL through the same statements as these (lambda_e2e,
# cli), stop before the server answers (timeouts), or do not use it.
PG_TESTS := postgres_rotation postgres_dynamic lease_api lease_attacks lease_connections secret_attacks lease_e2e
# Installed by scripts/setup (Debian 12 ships only 15); the harness runs the server in
# KEYTURN_PG_BIN, Debian's 15 without it.
PG_CACHE := /var/cache/keyturn-pg
# --workspace, as `cargo test --workspace` above: the same features, so nothing is rebuilt.
# A filter `module::` selects every test of that module (test names are module::test).
pg_tests = KEYTURN_PG_BIN=$(PG_CACHE)/$(1)/bin $(CARGO) test --no-fail-fast --workspace --test it -- $(PG_TESTS:%=%::)

.PHONY: setup demo test test-pg16 test-pg17 lint bench build release

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
	$(call pg_tests,16)
	$(call pg_tests,17)

test-pg16 test-pg17: setup
	$(CARGO) build --workspace --bins
	$(call pg_tests,$(@:test-pg%=%))

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
