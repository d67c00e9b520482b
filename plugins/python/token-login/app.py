"""token-login in Python: the same login as the Rust `plugins/token-login` (see
docs/login.md), on the SDK in `plugins/python/sipwasm`. Built with componentize-py:

    componentize-py -d wit -w http-handler componentize app \
        -p plugins/python/token-login -p plugins/python -o token-login-py.wasm

    token = EXPIRY ":" USER ":" MAC, MAC = base64url(HMAC-SHA-256(key, EXPIRY ":" USER))

    not a WebSocket handshake                 -> 404
    Host not ours, Origin not allowed         -> 403
    no token                                  -> 403 Token Required
    malformed, wrong MAC, expiry too far away -> 403 Invalid Token
    expired                                   -> 403 Token Expired
    valid                                     -> upgrade, identity user=USER (domain=...)

Plugin configuration: key (default "login", granted by the plugin's `keys`),
max-lifetime (seconds, default 86400), domain, allowed-origins.
"""

import json
import re

import wit_world
from wit_world.imports.types import Decision, HttpRequest

from sipwasm.plugin import (
    b64url_decode,
    config,
    error,
    header,
    hmac_verify,
    host_is_ours,
    is_websocket,
    now_seconds,
    query,
    reply,
    upgrade,
    warn,
)

SCHEMA = {
    "key": ("string", "login"),
    "max-lifetime": ("integer", 86400),
    "domain": ("string", ""),
    "allowed-origins": ("strings", []),
}

_EXPIRY = re.compile(r"[0-9]{1,19}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Refusal(Exception):
    def __init__(self, reason: str, why: str):
        super().__init__(why)
        self.reason = reason


def check(token: str, settings: dict, now: int) -> str:
    """The user a token names, if it is valid at `now`; raises Refusal otherwise."""
    signed, colon, mac_text = token.rpartition(":")
    if not colon:
        raise Refusal("Invalid Token", "no MAC")
    expiry_text, colon, user = signed.partition(":")
    if not colon:
        raise Refusal("Invalid Token", "no user")
    if not _EXPIRY.fullmatch(expiry_text):
        raise Refusal("Invalid Token", "expiry is not a number")
    expiry = int(expiry_text)
    if not user or len(user) > 256 or _CONTROL.search(user):
        raise Refusal("Invalid Token", "user is empty, too long or has control characters")
    mac = b64url_decode(mac_text)
    if mac is None:
        raise Refusal("Invalid Token", "MAC is not base64url")
    # The MAC first: an expiry or user an attacker made up says nothing.
    if not hmac_verify(settings["key"], signed, mac):
        raise Refusal("Invalid Token", "wrong MAC")
    if expiry <= now:
        raise Refusal("Token Expired", "token expired")
    if expiry - now > settings["max-lifetime"]:
        raise Refusal("Invalid Token", "expiry further away than max-lifetime")
    return user


def refuse(reason: str, why: str, peer: str) -> Decision:
    warn(f"login refused for {peer}: {why}")
    return reply(403, text=f"{reason}\n", reason=reason, close=True)


class WitWorld(wit_world.WitWorld):
    def on_http_request(self, request: HttpRequest) -> Decision:
        try:
            settings = config(SCHEMA)
        except ValueError as e:
            error(f"bad plugin config: {e}")
            return reply(500, close=True)
        peer = request.peer.remote_addr
        if not is_websocket(request):
            return reply(404, text="Not Found\n")
        host_header = header(request, "Host")
        if host_header is not None and not host_is_ours(request):
            return refuse("Forbidden", f"bad Host {json.dumps(host_header)}", peer)
        origins = [o.lower() for o in settings["allowed-origins"]]
        if origins and (header(request, "Origin") or "").lower() not in origins:
            return refuse("Forbidden", "Origin not allowed", peer)
        token = query(request, "token") or ""
        if not token:
            return refuse("Token Required", "no token", peer)
        try:
            user = check(token, settings, now_seconds())
        except Refusal as r:
            return refuse(r.reason, str(r), peer)
        identity = [("user", user), ("login", "token")]
        if settings["domain"]:
            identity.append(("domain", settings["domain"]))
        return upgrade(identity)
