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
# baresip (Debian's baresip-core) is a real phone for calls over UDP, TCP and TLS,
# Linphone (linphone-cli) a second one that uses GRUUs as its Contacts;
# Chromium runs JsSIP and SIP.js in a real headless browser (driven by playwright-core);
# SIPVicious (sipvicious) scans for users and guesses passwords against the server.
missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v baresip >/dev/null 2>&1 || missing+=(baresip-core)
command -v linphonec >/dev/null 2>&1 || missing+=(linphone-cli)
command -v svcrack >/dev/null 2>&1 || missing+=(sipvicious)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# rtpengine (Debian's rtpengine-daemon, run in userspace by the media tests) relays
# media between WebRTC and plain RTP.
command -v rtpengine >/dev/null 2>&1 || missing+=(rtpengine-daemon)
# dnsmasq (Debian's dnsmasq-base) serves the NAPTR, SRV and A records the DNS tests
# resolve next hops by, on a free loopback port.
[ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
# Redis (Debian's redis-server 7.0) is the shared location store of the cluster tests,
# started by them on a free loopback port with persistence off.
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
# sngrep (Debian's) receives the SIP capture the server sends over HEP.
[ -x /usr/bin/sngrep ] || missing+=(sngrep)
# systemd-analyze (Debian's systemd) verifies the systemd unit shipped in docs/packaging.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# JsSIP and SIP.js run under Node and in Chromium as browser SIP stacks; playwright-core
# drives Chromium, esbuild bundles JsSIP for the page (versions pinned in the lock file).
npm ci --prefix tests/js --no-audit --no-fund --silent

# Tool chains for the example plugins in other languages: jco (JavaScript, QuickJS) and
# componentize-py (Python), pinned, installed into the tree (plugins/js/node_modules and a
# virtualenv under target/), never system-wide.
npm ci --prefix plugins/js --no-audit --no-fund --silent
# JsSIP and esbuild for the softphone page built into the server (pinned).
npm ci --prefix plugins/softphone --no-audit --no-fund --silent
venv=target/plugin-tools/python
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r plugins/python/requirements.txt
# tools/plugin-build finds componentize-py there.

cargo test --workspace --locked "$@"

# The plugin SDK's own tests run natively (its helpers are plain Rust).
(cd plugins && cargo test --locked -p sipwasm-plugin)
