#!/usr/bin/env bash
# Builds sipwasm in release mode and measures it side by side with Kamailio 5.6 from
# Debian (installed when missing, with sipp for the calls and rtpengine for calls with
# their media relayed) on this machine: plugin decision time, handshake rate, memory
# per idle WebSocket connection, SIP load, calls, calls through rtpengine.
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
cargo build --release --locked -p sipwasm -p sipwasm-bench
./target/release/sipwasm-bench all --kamailio "$@"
