// The parts of the sipwasm JavaScript SDK that need no host: text encoding (QuickJS,
// which jco builds plugins with, has no TextEncoder), request helpers, decision
// builders, typed configuration, base64url. `plugin.js` adds the host's imports and
// re-exports all of this; plugins import from there. Tested under Node
// (`node --test plugins/js/sipwasm/`).

/** UTF-8 bytes of `text`. */
export function utf8(text) {
  const out = [];
  for (const ch of String(text)) {
    const c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

/** Text of UTF-8 `bytes` (each malformed byte becomes U+FFFD). */
export function fromUtf8(bytes) {
  let s = '';
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    let need;
    let c;
    if (b < 0x80) {
      s += String.fromCharCode(b);
      i += 1;
      continue;
    } else if (b >= 0xc2 && b < 0xe0) {
      [need, c] = [1, b & 0x1f];
    } else if (b >= 0xe0 && b < 0xf0) {
      [need, c] = [2, b & 0x0f];
    } else if (b >= 0xf0 && b < 0xf5) {
      [need, c] = [3, b & 0x07];
    } else {
      s += '\ufffd';
      i += 1;
      continue;
    }
    let k = 1;
    for (; k <= need; k++) {
      const n = bytes[i + k];
      if (n === undefined || (n & 0xc0) !== 0x80) break;
      c = (c << 6) | (n & 63);
    }
    const shortest = [0, 0x80, 0x800, 0x10000][need];
    if (k <= need || c < shortest || c > 0x10ffff || (c >= 0xd800 && c < 0xe000)) {
      s += '\ufffd';
      i += 1;
      continue;
    }
    s += String.fromCodePoint(c);
    i += need + 1;
  }
  return s;
}

/** The first value of header `name` (case-insensitive), trimmed, or undefined. */
export function header(req, name) {
  const lower = name.toLowerCase();
  const found = req.headers.find(([n]) => n.toLowerCase() === lower);
  return found ? found[1].trim() : undefined;
}

/** Every value of header `name`, in order, comma-separated lists split. */
export function headerValues(req, name) {
  const lower = name.toLowerCase();
  return req.headers
    .filter(([n]) => n.toLowerCase() === lower)
    .flatMap(([, v]) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

/** The target's path, without query or fragment. */
export function path(req) {
  return req.target.split(/[?#]/)[0];
}

function percentDecode(s) {
  const bytes = [];
  const raw = utf8(s.replace(/\+/g, ' '));
  for (let i = 0; i < raw.length; i++) {
    const hex = i + 2 < raw.length ? String.fromCharCode(raw[i + 1], raw[i + 2]) : '';
    if (raw[i] === 0x25 && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(raw[i]);
    }
  }
  return fromUtf8(new Uint8Array(bytes));
}

/** A query parameter, percent-decoded (`+` as space), or undefined. */
export function query(req, key) {
  const q = req.target.split('#')[0].split('?').slice(1).join('?');
  if (q === '') return undefined;
  for (const pair of q.split('&')) {
    const eq = pair.indexOf('=');
    const k = eq < 0 ? pair : pair.slice(0, eq);
    if (percentDecode(k) === key) return eq < 0 ? '' : percentDecode(pair.slice(eq + 1));
  }
  return undefined;
}

/** A cookie from the `Cookie` headers, or undefined. */
export function cookie(req, name) {
  const lower = 'cookie';
  for (const [n, v] of req.headers) {
    if (n.toLowerCase() !== lower) continue;
    for (const part of v.split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/** Whether the request is a valid WebSocket handshake (the host checked it). */
export function isWebSocket(req) {
  return req.websocket.tag === 'offer';
}

/**
 * A `reply` decision: `status`, and one of `text`, `html`, `json` (a value) or `body`
 * (bytes, with `contentType`); extra `headers` as [name, value] pairs; a `reason`;
 * `close` to close the connection after it.
 */
export function reply(status, { text, html, json, body, contentType, headers = [], reason, close = false } = {}) {
  const hs = [...headers];
  let bytes = new Uint8Array(0);
  if (text !== undefined) {
    hs.push(['Content-Type', 'text/plain; charset=utf-8']);
    bytes = utf8(text);
  } else if (html !== undefined) {
    hs.push(['Content-Type', 'text/html; charset=utf-8']);
    bytes = utf8(html);
  } else if (json !== undefined) {
    hs.push(['Content-Type', 'application/json']);
    bytes = utf8(JSON.stringify(json));
  } else if (body !== undefined) {
    if (contentType !== undefined) hs.push(['Content-Type', contentType]);
    bytes = body instanceof Uint8Array ? body : utf8(body);
  }
  return { tag: 'reply', val: { status, reason, headers: hs, body: bytes, close } };
}

/**
 * An `upgrade` decision to the `sip` subprotocol, with `identity` (an object or
 * [key, value] pairs, e.g. `{ user: 'alice' }`) and extra 101 `headers`.
 */
export function upgrade({ identity = [], headers = [] } = {}) {
  const pairs = Array.isArray(identity) ? identity : Object.entries(identity);
  return {
    tag: 'upgrade',
    val: { subprotocol: 'sip', headers, identity: pairs.map(([k, v]) => [String(k), String(v)]) },
  };
}

/** A `challenge` decision: the host answers 401 with a Digest challenge for `realm`. */
export function challenge(realm) {
  return { tag: 'challenge', val: { realm } };
}

const KINDS = {
  string: (v) => typeof v === 'string',
  integer: (v) => Number.isInteger(v),
  boolean: (v) => typeof v === 'boolean',
  strings: (v) => Array.isArray(v) && v.every((x) => typeof x === 'string'),
  integers: (v) => Array.isArray(v) && v.every((x) => Number.isInteger(x)),
  table: (v) => typeof v === 'object' && v !== null && !Array.isArray(v),
};

/**
 * Reads a plugin `config` table (JSON text) against `schema`, `{ key: { kind,
 * default } }` with kind one of string, integer, boolean, strings, integers, table (a key
 * without a default is required). Unknown keys and wrong kinds throw, naming the key.
 */
export function parseConfig(json, schema) {
  const raw = JSON.parse(json);
  const out = {};
  for (const key of Object.keys(raw)) {
    if (!(key in schema)) {
      throw new Error(`unknown config key ${JSON.stringify(key)} (known: ${Object.keys(schema).join(', ')})`);
    }
  }
  for (const [key, { kind, default: dflt }] of Object.entries(schema)) {
    if (!(kind in KINDS)) throw new Error(`schema: ${key} has unknown kind ${kind}`);
    if (!(key in raw)) {
      if (dflt === undefined) throw new Error(`config key ${JSON.stringify(key)} is required`);
      out[key] = dflt;
    } else if (!KINDS[kind](raw[key])) {
      throw new Error(`config key ${JSON.stringify(key)} must be ${kind === 'integer' ? 'an' : 'a'} ${kind.replace(/s$/, '')}${kind.endsWith('s') ? ' list' : ''}`);
    } else {
      out[key] = raw[key];
    }
  }
  return out;
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** Unpadded base64url (RFC 4648 section 5) of `bytes`. */
export function base64urlEncode(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = Math.min(bytes.length - i, 3) + 1;
    for (let k = 0; k < chars; k++) out += ALPHABET[(n >> (18 - 6 * k)) & 63];
  }
  return out;
}

/**
 * The bytes of unpadded base64url `text`, or undefined for another alphabet, padding,
 * an impossible length or stray bits (one spelling per value).
 */
export function base64urlDecode(text) {
  if (text.length % 4 === 1) return undefined;
  const out = [];
  for (let i = 0; i < text.length; i += 4) {
    const chunk = text.slice(i, i + 4);
    let n = 0;
    for (let k = 0; k < chunk.length; k++) {
      const v = ALPHABET.indexOf(chunk[k]);
      if (v < 0) return undefined;
      n |= v << (18 - 6 * k);
    }
    const whole = chunk.length - 1;
    for (let k = 0; k < whole; k++) out.push((n >> (16 - 8 * k)) & 255);
    const spare = whole === 3 ? 0 : n & (0xffffff >> (8 * whole));
    if (spare !== 0) return undefined;
  }
  return new Uint8Array(out);
}

// ---------------------------------------------------------------- sip-router

/** The default registrar and proxy behaviour. */
export const CONTINUE = Object.freeze({ tag: 'continue' });

/** A final response (200..=699); the host writes Via, From, To, Call-ID, CSeq... */
export function sipReply(status, { reason, headers = [] } = {}) {
  return { tag: 'reply', val: { status, reason, headers } };
}

/** Forward statefully to `uri`, which becomes the Request-URI. */
export function relay(uri) {
  return { tag: 'relay', val: uri };
}

/** 401 (REGISTER) or 407 with a Digest challenge of the host's. */
export function sipChallenge(realm) {
  return { tag: 'challenge', val: realm };
}

/** The Request-URI's user part (the number dialled), as the host parsed it. */
export function ruriUser(req) {
  return req.target?.user ?? undefined;
}

/** The From URI's user part, as the host parsed it (a display name never counts). */
export function userInFrom(req) {
  return req.from?.user ?? undefined;
}

/** The To URI's user part (for REGISTER, the address-of-record's user). */
export function userInTo(req) {
  return req.to?.user ?? undefined;
}

/** An identity attribute the login plugin attached to the request's WebSocket flow. */
export function identity(req, key) {
  const found = req.source.identity.find(([k]) => k === key);
  return found ? found[1] : undefined;
}
