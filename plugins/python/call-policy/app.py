"""call-policy in Python: a `sip-router` plugin on the SDK (`sipwasm.sip`), the same
blocked numbers and prefix relays as the Rust `plugins/call-policy`:

    componentize-py -d wit -w sip-router componentize app \
        -p plugins/python/call-policy -p plugins/python -o call-policy-py.wasm

    INVITE/MESSAGE to a blocked number   -> 403 Blocked
    a Request-URI user with a relay prefix -> relay to sip:<user>@<next hop>
    anything else                        -> continue (registrar, proxy)

and a log line for each connection that carried SIP and closed.

Plugin configuration:

    blocked = ["+15550100", "666"]
    relay = { "9" = "127.0.0.1:5070" }
"""

import wit_world
from wit_world.imports.sip_types import ClosedFlow, SipDecision, SipRequest

from sipwasm.sip import CONTINUE, config, error, info, relay, ruri_user, sip_reply, transport_name

SCHEMA = {"blocked": ("strings", []), "relay": ("table", {})}


def settings() -> dict:
    s = config(SCHEMA)
    if not all(isinstance(v, str) for v in s["relay"].values()):
        raise ValueError("relay must map prefixes to next hops (strings)")
    return s


class WitWorld(wit_world.WitWorld):
    def on_sip_request(self, request: SipRequest) -> SipDecision:
        try:
            s = settings()
        except ValueError as e:
            error(f"bad plugin config: {e}")
            return sip_reply(500, "Plugin Misconfigured")
        user = ruri_user(request)
        if user is None:
            return CONTINUE
        if request.method in ("INVITE", "MESSAGE") and user in s["blocked"]:
            info(f"blocked {request.method} to {user} from {request.source.remote_addr}:{request.source.remote_port}")
            return sip_reply(403, "Blocked")
        # The longest matching prefix wins.
        prefixes = [p for p in s["relay"] if user.startswith(p)]
        if prefixes:
            hop = s["relay"][max(prefixes, key=len)]
            # A gateway set of the server: the host puts the user at the member it picks.
            return relay(hop if hop.startswith("gw:") else f"sip:{user}@{hop}")
        return CONTINUE

    def on_flow_closed(self, flow: ClosedFlow) -> None:
        f = flow.flow
        who = ",".join(f"{k}={v}" for k, v in f.identity)
        info(
            f"flow closed: {transport_name(f.transport)} {f.remote_addr}:{f.remote_port} "
            f"identity [{who}] bindings lost: [{', '.join(flow.aors)}]"
        )
