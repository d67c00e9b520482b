"""seed-policy in Python: the same WebSocket admission policy as the Rust
`plugins/seed-policy`, built into a component with componentize-py:

    pip install -r plugins/python/requirements.txt
    componentize-py -d wit -w http-handler componentize app -p plugins/python/seed-policy -o seed-policy-py.wasm

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
from typing import Optional

import wit_world
from wit_world.imports import host
from wit_world.imports.host import Level
from wit_world.imports.types import (
    Decision,
    Decision_Reply,
    Decision_Upgrade,
    HttpRequest,
    Response,
    Upgrade,
    Websocket_None_,
)

KNOWN_KEYS = ("web-ports", "allowed-origins")


class Settings:
    def __init__(self, raw: dict):
        unknown = [k for k in raw if k not in KNOWN_KEYS]
        if unknown:
            raise ValueError(
                f"unknown config key {json.dumps(unknown[0])} (known: {', '.join(KNOWN_KEYS)})"
            )
        ports = raw.get("web-ports", [80, 443])
        origins = raw.get("allowed-origins", [])
        if not isinstance(ports, list) or not all(
            isinstance(p, int) and 0 < p < 65536 for p in ports
        ):
            raise ValueError("web-ports must be a list of port numbers")
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise ValueError("allowed-origins must be a list of strings")
        self.web_ports = set(ports)
        self.origins = {o.lower() for o in origins}


# Read once per instance: the host hands every call of an instance the same table.
_settings: Optional[Settings] = None


def header(req: HttpRequest, name: str) -> Optional[str]:
    lower = name.lower()
    for n, v in req.headers:
        if n.lower() == lower:
            return v.strip()
    return None


def reply(status: int, text: Optional[str] = None, close: bool = False) -> Decision:
    headers = []
    body = b""
    if text is not None:
        headers.append(("Content-Type", "text/plain; charset=utf-8"))
        body = text.encode("utf-8")
    return Decision_Reply(Response(status=status, reason=None, headers=headers, body=body, close=close))


def refuse(why: str) -> Decision:
    host.log(Level.WARN, why)
    return reply(403, close=True)


class WitWorld(wit_world.WitWorld):
    def on_http_request(self, request: HttpRequest) -> Decision:
        global _settings
        if _settings is None:
            try:
                _settings = Settings(json.loads(host.plugin_config()))
            except ValueError as e:
                host.log(Level.ERROR, f"bad plugin config: {e}")
                return reply(500, close=True)
        settings = _settings
        port = request.peer.local_port
        if port not in settings.web_ports:
            return refuse(f"HTTP request received on port {port}")
        if isinstance(request.websocket, Websocket_None_):
            return reply(404, "Not Found\n")
        # A missing Host is a handshake error: the host answers 400.
        host_header = header(request, "Host")
        if host_header is not None and not host.is_myself(host_header):
            return refuse(f"bad Host {json.dumps(host_header)}")
        origin = header(request, "Origin")
        if settings.origins:
            if origin is None:
                return refuse("no Origin")
            if origin.lower() not in settings.origins:
                return refuse(f"Origin {json.dumps(origin)} not allowed")
        identity = [] if origin is None else [("origin", origin)]
        return Decision_Upgrade(Upgrade(subprotocol="sip", headers=[], identity=identity))
