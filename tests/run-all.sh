#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs
# unit tests, the CLI tests and the end-to-end tests (real binary, real clients,
# plugins compiled from plugins/).
set -euo pipefail
cd "$(dirname "$0")/.."

# Guest plugins are wasm32-wasip2 components.
rustup target add wasm32-wasip2

cargo test --workspace --locked "$@"
