#!/usr/bin/env bash
# buf breaking: proto/ here against proto/ of a baseline commit (the rules: proto/buf.yaml).
#
# The baseline: $BASE if set (any commit-ish); else, on a branch, where it left main (its
# merge-base with main, or origin/main in a clone that has no local main); on main itself, the
# commit before (HEAD^: the previous main when a branch lands as a merge). The baseline's
# proto/ is read with git archive, so this works in worktrees and needs no network; a clone
# without the baseline commit (shallow) says so and skips rather than fail on missing history.
set -euo pipefail
cd "$(dirname "$0")/.."

base_ref() {
    if [[ -n "${BASE:-}" ]]; then
        git rev-parse --verify --quiet "$BASE^{commit}"
        return
    fi
    local main
    for main in main origin/main; do
        if git rev-parse --verify --quiet "$main^{commit}" >/dev/null; then
            local fork head
            fork=$(git merge-base HEAD "$main") || return 1
            head=$(git rev-parse HEAD)
            if [[ "$fork" == "$head" ]]; then
                git rev-parse --verify --quiet "HEAD^{commit}^1" || return 1
            else
                echo "$fork"
            fi
            return
        fi
    done
    return 1
}

if ! base=$(base_ref) || [[ -z "$base" ]]; then
    echo "buf breaking: skipped, no baseline commit in this clone (set BASE=<commit>)"
    exit 0
fi
if [[ -z "$(git ls-tree --name-only "$base" proto)" ]]; then
    echo "buf breaking: skipped, $(git rev-parse --short "$base") has no proto/"
    exit 0
fi
against=$(mktemp -d)
trap 'rm -rf "$against"' EXIT
git archive "$base" proto | tar -x -C "$against"
echo "buf breaking: proto/ against $(git rev-parse --short "$base")"
node_modules/.bin/buf breaking proto --against "$against/proto"
