# The two commands of the README: `make demo` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: postgres-server metrics-tools setup demo test check lock-check lock lint typecheck buf buf-breaking stubs-check go-stubs-check go-check rust-check contracts-check pytest stubs clean

# The Python environment is exactly uv.lock (hashes checked): uv, pinned in pyproject.toml's dev
# extra, is bootstrapped with pip, then installs the lock (--locked: a lock that does not match
# pyproject.toml is an error, never silently re-resolved). `make lock` rewrites it.
UV := $(BIN)/uv
UV_PIN := $(shell grep -o '"uv==[^"]*"' pyproject.toml | tr -d '"')
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

$(BIN)/.installed: pyproject.toml uv.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(UV_PIN)
	$(UV) sync --quiet --locked --extra dev --python $(BIN)/python
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Each Node.js adaptor keeps its own package.json; install them all.
NODE_ADAPTORS := $(patsubst %/package.json,%,$(wildcard adaptors/*/package.json))
NODE_STAMPS := $(addsuffix /node_modules/.installed,$(NODE_ADAPTORS))

adaptors/%/node_modules/.installed: adaptors/%/package.json adaptors/%/package-lock.json
	cd adaptors/$* && npm ci --no-audit --no-fund
	touch $@

# The JavaScript reference connector and STREAM for tests/interop, in their own folder.
INTEROP_STAMP := tests/interop/node_modules/.installed

$(INTEROP_STAMP): tests/interop/package.json tests/interop/package-lock.json
	cd tests/interop && npm ci --no-audit --no-fund
	touch $@

# The Go adaptor (go-plugin); the Go module proxy provides its modules.
GO_ADAPTOR := adaptors/simledger-go/bin/simledger-go

$(GO_ADAPTOR): $(wildcard adaptors/simledger-go/*.go adaptors/simledger-go/gen/*/*/*/*.go) adaptors/simledger-go/go.mod adaptors/simledger-go/go.sum
	cd adaptors/simledger-go && go build -o bin/simledger-go .

# PostgreSQL server binaries for the store tests, which start a server of their own
# (tests/postgres_server.py): Debian's package, installed only where missing.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; }

# The Rust adaptor (tonic); crates.io provides its crates, protox compiles proto/ (no protoc).
RUST_ADAPTOR := adaptors/simledger-rust/target/debug/simledger-rust

$(RUST_ADAPTOR): $(wildcard adaptors/simledger-rust/src/*.rs) adaptors/simledger-rust/build.rs adaptors/simledger-rust/Cargo.toml adaptors/simledger-rust/Cargo.lock $(wildcard proto/*/*/*/*.proto proto/plugin/*.proto)
	cd adaptors/simledger-rust && cargo build --locked
	touch $@

# Debian's prometheus and jq for tests/metrics, only where missing (about a minute).
metrics-tools:
	scripts/install-debian-tools.sh

setup: $(BIN)/.installed node_modules/.installed $(NODE_STAMPS) $(INTEROP_STAMP) $(GO_ADAPTOR) \
	$(RUST_ADAPTOR) postgres-server metrics-tools

## The main job on the embedded default: it runs only the Python adaptor, so it installs only
## the Python environment (setup's Node.js, Go and Rust builds are for the tests and variants).
demo: $(BIN)/.installed
	$(BIN)/ilp-host demo

## Every check and test.
test: setup check pytest

check: lock-check stubs-check go-stubs-check buf buf-breaking lint typecheck go-check rust-check contracts-check

# uv.lock matches pyproject.toml (after editing dependencies: make lock, and commit uv.lock).
lock-check: $(BIN)/.installed
	$(UV) lock --check --offline --python $(BIN)/python

lock: $(BIN)/.installed
	$(UV) lock --python $(BIN)/python

# The Go adaptor's own unit tests and vet.
go-check:
	cd adaptors/simledger-go && go vet ./... && go test ./...

# The Rust adaptor's own unit tests.
rust-check:
	cd adaptors/simledger-rust && cargo test --locked

# The demo token's committed bytecode is what solcjs (npm solc, pinned) compiles from its source.
contracts-check:
	node adaptors/ethereum/contracts/compile.mjs --check

stubs-check:
	$(BIN)/python scripts/gen_protos.py --check

# The Go adaptor's committed gen/ is what its pinned generators make of proto/.
go-stubs-check:
	adaptors/simledger-go/generate.sh --check

buf:
	node_modules/.bin/buf lint proto

# No breaking change to the contract since where this branch left main (on main: since the
# previous commit); BASE=<commit> compares against another. See scripts/proto-breaking.sh.
buf-breaking:
	scripts/proto-breaking.sh

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The host and the SDK (pyproject.toml's files), then the Ethereum adaptor on its own: its
# modules import each other by their bare names (it runs as a script from its directory).
typecheck:
	$(BIN)/mypy
	$(BIN)/mypy adaptors/ethereum

# The suite under coverage.py; the figure is of the pytest process only (see pyproject.toml).
pytest:
	$(BIN)/coverage erase
	@status=0; $(BIN)/coverage run -m pytest || status=$$?; \
	echo "coverage of host/ and sdk/ by the pytest process: $$($(BIN)/coverage report --format=total)% of lines (details: $(BIN)/coverage report)"; \
	exit $$status

## The long chaos run (tests/chaos): 200 faults across both proposals, outside `make test`
## (which runs 10 per proposal). SEED=N replays a run's schedule.
.PHONY: chaos
chaos: $(BIN)/.installed
	$(BIN)/python -m tests.chaos --cycles 200 --engines internal,external $(if $(SEED),--seed $(SEED))

## The long run of Alice's three `ilp-host run` instances on one PostgreSQL database, killed at
## random (tests/store/pg_tier.py): 100 kills, outside `make test` (which runs 5). SEED=N replays.
.PHONY: soak-pg
soak-pg: $(BIN)/.installed postgres-server
	$(BIN)/python -m tests.store.pg_tier --kills 100 $(if $(SEED),--seed $(SEED))

## Regenerate sdk/pb and host/pb after editing proto/.
stubs: setup
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) node_modules tests/interop/node_modules
