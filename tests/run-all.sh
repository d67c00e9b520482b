#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs
# unit tests, the CLI tests and the end-to-end tests (real binary, real clients,
# plugins compiled from plugins/).
set -euo pipefail
cd "$(dirname "$0")/.."

# Guest plugins are wasm32-wasip2 components.
rustup target add wasm32-wasip2

# sipp (Debian's sip-tester) is a real SIP peer for the UDP/TCP tests.
sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
if ! command -v sipp >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq sip-tester
fi

# JsSIP and SIP.js run under Node as browser SIP stacks (versions pinned in the lock file).
npm ci --prefix tests/js --no-audit --no-fund --silent

cargo test --workspace --locked "$@"
