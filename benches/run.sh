#!/usr/bin/env bash
# Builds sipwasm in release mode and measures it side by side with Kamailio 5.6 from
# Debian (installed when missing, with sipp for the calls and rtpengine for calls with
# their media relayed) on this machine: plugin decision time, handshake rate, logins
# through token-login in three languages, memory per idle WebSocket connection, SIP
# load, calls, calls through rtpengine.
# Arguments go to `sipwasm-bench all`.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
if ! command -v kamailio >/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so ] \
    || [ ! -e /usr/lib/x86_64-linux-gnu/kamailio/modules/rtpengine.so ] \
    || ! command -v sipp >/dev/null || ! command -v rtpengine >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio kamailio-websocket-modules \
        sip-tester rtpengine-daemon
fi
# The softphone page built into the server (JsSIP), and the tool chains of the
# JavaScript and Python token-login the logins bench measures (pinned, in the tree).
npm ci --prefix plugins/softphone --no-audit --no-fund --silent
npm ci --prefix plugins/js --no-audit --no-fund --silent
venv=target/plugin-tools/python
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r plugins/python/requirements.txt
cargo build --release --locked -p sipwasm -p sipwasm-bench
./target/release/sipwasm-bench all --kamailio "$@"
