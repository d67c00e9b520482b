"""The host-free part of the sipwasm Python SDK: request helpers over anything with
`target` and `headers` (the host's `http-request`), typed configuration, base64url."""

import base64
import binascii
import json
import re
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote_plus


def header(req, name: str) -> Optional[str]:
    """The first value of header `name` (case-insensitive), stripped, or None."""
    lower = name.lower()
    for n, v in req.headers:
        if n.lower() == lower:
            return v.strip()
    return None


def header_values(req, name: str) -> List[str]:
    """Every value of header `name`, in order, comma-separated lists split."""
    lower = name.lower()
    out = []
    for n, v in req.headers:
        if n.lower() == lower:
            out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def path(req) -> str:
    """The target's path, without query or fragment."""
    return re.split(r"[?#]", req.target, maxsplit=1)[0]


def query(req, key: str) -> Optional[str]:
    """A query parameter, percent-decoded (`+` as space), or None."""
    target = req.target.split("#", 1)[0]
    if "?" not in target:
        return None
    for pair in target.split("?", 1)[1].split("&"):
        k, eq, v = pair.partition("=")
        if unquote_plus(k) == key:
            return unquote_plus(v) if eq else ""
    return None


def cookie(req, name: str) -> Optional[str]:
    """A cookie from the `Cookie` headers, or None."""
    for n, v in req.headers:
        if n.lower() != "cookie":
            continue
        for part in v.split(";"):
            k, eq, val = part.partition("=")
            if eq and k.strip() == name:
                return val.strip()
    return None


_KINDS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "integers": lambda v: isinstance(v, list)
    and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
    "table": lambda v: isinstance(v, dict),
}

_REQUIRED = object()


def parse_config(text: str, schema: Dict[str, Tuple[str, Any]]) -> Dict[str, Any]:
    """Reads a plugin `config` table (JSON text) against `schema`, `{key: (kind,
    default)}` with kind one of string, integer, boolean, strings, integers (default
    `REQUIRED` for a key that must be given). Unknown keys and wrong kinds raise
    ValueError naming the key."""
    raw = json.loads(text)
    for key in raw:
        if key not in schema:
            raise ValueError(f"unknown config key {json.dumps(key)} (known: {', '.join(schema)})")
    out = {}
    for key, (kind, default) in schema.items():
        if kind not in _KINDS:
            raise ValueError(f"schema: {key} has unknown kind {kind}")
        if key not in raw:
            if default is _REQUIRED:
                raise ValueError(f"config key {json.dumps(key)} is required")
            out[key] = default
        elif not _KINDS[kind](raw[key]):
            raise ValueError(f"config key {json.dumps(key)} must be of kind {kind}")
        else:
            out[key] = raw[key]
    return out


REQUIRED = _REQUIRED

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5) of `data`."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> Optional[bytes]:
    """The bytes of unpadded base64url `text`, or None for another alphabet, padding,
    an impossible length or stray bits (one spelling per value)."""
    if len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if b64url_encode(data) == text else None
