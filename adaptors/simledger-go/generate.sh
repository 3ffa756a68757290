#!/bin/sh
# Regenerate gen/ from the contract in proto/ (repo root) with buf and local, pinned plugins.
# Run after editing a .proto file; the generated code is committed so that a plain
# `go build` needs neither buf nor the plugins. `generate.sh --check` generates into a
# temporary directory instead and fails if gen/ differs from it (make check runs it).
set -eu

PROTOC_GEN_GO_VERSION=v1.36.12      # keep equal to google.golang.org/protobuf in go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
buf="$root/node_modules/.bin/buf"
if [ ! -x "$buf" ]; then
    echo "generate.sh: $buf not found: run 'npm ci' at the repo root first" >&2
    exit 1
fi
case "${1:-}" in
    "") check=false ;;
    --check) check=true ;;
    *) echo "usage: generate.sh [--check]" >&2; exit 2 ;;
esac

cd "$here"
GOBIN="$here/.bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
GOBIN="$here/.bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
if $check; then
    fresh=$(mktemp -d)
    trap 'rm -rf "$fresh"' EXIT
    "$buf" generate --template buf.gen.yaml -o "$fresh"
    if ! diff -r gen "$fresh/gen" >/dev/null; then
        echo "adaptors/simledger-go/gen is stale; run: adaptors/simledger-go/generate.sh" >&2
        diff -rq gen "$fresh/gen" >&2 || true
        exit 1
    fi
    echo "adaptors/simledger-go/gen is fresh"
    exit 0
fi
rm -rf gen
"$buf" generate --template buf.gen.yaml
echo "generated $(find gen -name '*.go' | wc -l | tr -d ' ') files under gen/"
