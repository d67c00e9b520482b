"""seed-policy in Python: the same WebSocket admission policy as the Rust
`plugins/seed-policy`, on the SDK in `plugins/python/sipwasm`, built into a component
with componentize-py:

    pip install -r plugins/python/requirements.txt
    componentize-py -d wit -w http-handler componentize app \
        -p plugins/python/seed-policy -p plugins/python -o seed-policy-py.wasm

    request on a port that is not a web port    -> 403
    WebSocket request whose Host is not ours     -> 403
    WebSocket request from an Origin not allowed -> 403
    WebSocket request                            -> upgrade to `sip` (the host re-checks it)
    anything else                                -> 404

Plugin configuration (the `config` table of the plugin in the server config):

    web-ports = [8080, 8443]                      # default: [80, 443]
    allowed-origins = ["https://app.example.org"] # default: any Origin
"""

import json

import wit_world
from wit_world.imports.types import Decision, HttpRequest, Websocket_None_

from sipwasm.plugin import config, error, header, host_is_ours, reply, upgrade, warn

SCHEMA = {
    "web-ports": ("integers", [80, 443]),
    "allowed-origins": ("strings", []),
}


def refuse(why: str) -> Decision:
    warn(why)
    return reply(403, close=True)


class WitWorld(wit_world.WitWorld):
    def on_http_request(self, request: HttpRequest) -> Decision:
        try:
            settings = config(SCHEMA)
            if not all(0 < p < 65536 for p in settings["web-ports"]):
                raise ValueError("web-ports must be a list of port numbers")
        except ValueError as e:
            error(f"bad plugin config: {e}")
            return reply(500, close=True)
        port = request.peer.local_port
        if port not in settings["web-ports"]:
            return refuse(f"HTTP request received on port {port}")
        # An invalid handshake goes on to `upgrade`, which the host answers with its error.
        if isinstance(request.websocket, Websocket_None_):
            return reply(404, text="Not Found\n")
        # A missing Host is a handshake error: the host answers 400.
        host_header = header(request, "Host")
        if host_header is not None and not host_is_ours(request):
            return refuse(f"bad Host {json.dumps(host_header)}")
        origin = header(request, "Origin")
        origins = {o.lower() for o in settings["allowed-origins"]}
        if origins:
            if origin is None:
                return refuse("no Origin")
            if origin.lower() not in origins:
                return refuse(f"Origin {json.dumps(origin)} not allowed")
        return upgrade([] if origin is None else [("origin", origin)])
