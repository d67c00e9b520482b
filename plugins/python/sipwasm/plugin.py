"""The sipwasm Python SDK: `sipwasm.core` plus the host's imports (logging,
`is_myself`, the plugin's configuration, the named keys) and the decision builders.

    from sipwasm.plugin import query, reply, upgrade, config, hmac_verify
"""

import time
from typing import Dict, Iterable, List, Optional, Tuple, Union

from wit_world.imports import host, keys
from wit_world.imports.host import Level
from wit_world.imports.types import (
    Challenge,
    Decision,
    Decision_Challenge,
    Decision_Reply,
    Decision_Upgrade,
    Response,
    Upgrade,
    Websocket_Offer,
)
from componentize_py_types import Err

from .core import (  # noqa: F401  (re-exported)
    REQUIRED,
    b64url_decode,
    b64url_encode,
    cookie,
    header,
    header_values,
    parse_config,
    path,
    query,
)


def info(message: str) -> None:
    host.log(Level.INFO, str(message))


def warn(message: str) -> None:
    host.log(Level.WARN, str(message))


def error(message: str) -> None:
    host.log(Level.ERROR, str(message))


def is_myself(name: str) -> bool:
    """Whether `name` (a Host header value) names this server."""
    return host.is_myself(name)


def host_is_ours(req) -> bool:
    """Whether the request's Host header names this server."""
    h = header(req, "Host")
    return h is not None and host.is_myself(h)


def is_websocket(req) -> bool:
    """Whether the request is a valid WebSocket handshake (the host checked it)."""
    return isinstance(req.websocket, Websocket_Offer)


_config = None


def config(schema) -> dict:
    """The plugin's `config` table read against `schema` (see `parse_config`), once
    per instance; raises ValueError naming the key that does not fit."""
    global _config
    if _config is None:
        _config = parse_config(host.plugin_config(), schema)
    return _config


def reply(
    status: int,
    text: Optional[str] = None,
    html: Optional[str] = None,
    body: Optional[bytes] = None,
    content_type: Optional[str] = None,
    headers: Iterable[Tuple[str, str]] = (),
    reason: Optional[str] = None,
    close: bool = False,
) -> Decision:
    """A `reply` decision: `status` and one of `text`, `html` or `body` (with
    `content_type`); extra `headers`; a `reason`; `close` the connection after it."""
    hs: List[Tuple[str, str]] = list(headers)
    data = b""
    if text is not None:
        hs.append(("Content-Type", "text/plain; charset=utf-8"))
        data = text.encode("utf-8")
    elif html is not None:
        hs.append(("Content-Type", "text/html; charset=utf-8"))
        data = html.encode("utf-8")
    elif body is not None:
        if content_type is not None:
            hs.append(("Content-Type", content_type))
        data = body
    return Decision_Reply(Response(status=status, reason=reason, headers=hs, body=data, close=close))


def upgrade(
    identity: Union[Dict[str, str], Iterable[Tuple[str, str]]] = (),
    headers: Iterable[Tuple[str, str]] = (),
) -> Decision:
    """An `upgrade` decision to the `sip` subprotocol with `identity` (a dict or
    pairs, e.g. `{"user": "alice"}`) and extra 101 `headers`."""
    pairs = identity.items() if isinstance(identity, dict) else identity
    return Decision_Upgrade(
        Upgrade(subprotocol="sip", headers=list(headers), identity=[(str(k), str(v)) for k, v in pairs])
    )


def challenge(realm: str) -> Decision:
    """A `challenge` decision: the host answers 401 with a Digest challenge."""
    return Decision_Challenge(Challenge(realm=realm))


def _bytes(data: Union[str, bytes]) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def hmac_sign(key: str, data: Union[str, bytes]) -> bytes:
    """HMAC-SHA-256 of `data` under the granted key `key`; ValueError says why not."""
    try:
        return keys.hmac_sign(key, _bytes(data))
    except Err as e:
        raise ValueError(e.value) from None


def hmac_verify(key: str, data: Union[str, bytes], mac: bytes) -> bool:
    """Whether `mac` is the HMAC-SHA-256 of `data` under `key` (constant time)."""
    return keys.hmac_verify(key, _bytes(data), mac)


def now_seconds() -> int:
    """Seconds since the Unix epoch (the WASI wall clock)."""
    return int(time.time())
