"""The sipwasm Python SDK for `sip-router` plugins: `sipwasm.plugin`'s host imports
(logging, `config`, keys, the user store) plus the SIP request helpers and decisions.

    from sipwasm.sip import CONTINUE, config, relay, sip_reply, ruri_user
"""

from typing import Iterable, List, Optional, Tuple

from wit_world.imports import digest, registrar  # noqa: F401  (re-exported)
from wit_world.imports.sip_types import (
    SipDecision,
    SipDecision_Challenge,
    SipDecision_Continue,
    SipDecision_Relay,
    SipDecision_Reply,
    SipReply,
    SipRequest,
    SipTransport,
)

from .plugin import REQUIRED, config, error, hmac_sign, hmac_verify, info, warn  # noqa: F401

#: The default registrar and proxy behaviour.
CONTINUE: SipDecision = SipDecision_Continue()


def sip_reply(status: int, reason: Optional[str] = None, headers: Iterable[Tuple[str, str]] = ()) -> SipDecision:
    """A final response (200..=699); the host writes Via, From, To with a tag, Call-ID,
    CSeq, Server and Content-Length."""
    return SipDecision_Reply(SipReply(status=status, reason=reason, headers=list(headers)))


def relay(uri: str) -> SipDecision:
    """Forward statefully to `uri`, which becomes the Request-URI."""
    return SipDecision_Relay(uri)


def challenge(realm: str) -> SipDecision:
    """401 (REGISTER) or 407 with a Digest challenge of the host's."""
    return SipDecision_Challenge(realm)


def header(req: SipRequest, name: str) -> Optional[str]:
    """The first value of header `name` (case-insensitive; long forms), stripped."""
    lower = name.lower()
    for n, v in req.headers:
        if n.lower() == lower:
            return v.strip()
    return None


def ruri_user(req: SipRequest) -> Optional[str]:
    """The Request-URI's user part (the number dialled), as the host parsed it."""
    return req.target.user if req.target is not None else None


def user_in_from(req: SipRequest) -> Optional[str]:
    """The From URI's user part, as the host parsed it (a display name never counts)."""
    return req.from_.user if req.from_ is not None else None


def user_in_to(req: SipRequest) -> Optional[str]:
    """The To URI's user part (for REGISTER, the address-of-record's user)."""
    return req.to.user if req.to is not None else None


def identity(req: SipRequest, key: str) -> Optional[str]:
    """An identity attribute the login plugin attached to the WebSocket flow."""
    for k, v in req.source.identity:
        if k == key:
            return v
    return None


def transport_name(t: SipTransport) -> str:
    """`udp`, `tcp`, `tls`, `ws` or `wss`."""
    return t.name.lower()


__all__: List[str] = [
    "CONTINUE",
    "REQUIRED",
    "challenge",
    "config",
    "digest",
    "error",
    "header",
    "hmac_sign",
    "hmac_verify",
    "identity",
    "info",
    "registrar",
    "relay",
    "ruri_user",
    "sip_reply",
    "transport_name",
    "user_in_from",
    "user_in_to",
    "warn",
]
