// seed-policy in JavaScript: the same WebSocket admission policy as the Rust
// `plugins/seed-policy`, built into a component with jco (QuickJS engine):
//
//   npm ci --prefix plugins/js && npm run --prefix plugins/js build
//
//   request on a port that is not a web port    -> 403
//   WebSocket request whose Host is not ours     -> 403
//   WebSocket request from an Origin not allowed -> 403
//   WebSocket request                            -> upgrade to `sip` (the host re-checks it)
//   anything else                                -> 404
//
// Plugin configuration (the `config` table of the plugin in the server config):
//   web-ports = [8080, 8443]                      # default: [80, 443]
//   allowed-origins = ["https://app.example.org"] # default: any Origin

import { log, isMyself, pluginConfig } from 'sipwasm:plugin/host@0.2.0';

const KNOWN_KEYS = ['web-ports', 'allowed-origins'];

// Read once per instance: the host hands every call of an instance the same table.
let settings = null;

function loadSettings() {
  const raw = JSON.parse(pluginConfig());
  for (const key of Object.keys(raw)) {
    if (!KNOWN_KEYS.includes(key)) {
      throw new Error(`unknown config key ${JSON.stringify(key)} (known: ${KNOWN_KEYS.join(', ')})`);
    }
  }
  const webPorts = raw['web-ports'] ?? [80, 443];
  const origins = raw['allowed-origins'] ?? [];
  if (!Array.isArray(webPorts) || !webPorts.every((p) => Number.isInteger(p) && p > 0 && p < 65536)) {
    throw new Error('web-ports must be a list of port numbers');
  }
  if (!Array.isArray(origins) || !origins.every((o) => typeof o === 'string')) {
    throw new Error('allowed-origins must be a list of strings');
  }
  return { webPorts, origins: origins.map((o) => o.toLowerCase()) };
}

// QuickJS has no TextEncoder: bodies are encoded here.
function utf8(text) {
  const out = [];
  for (const ch of text) {
    let c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

function header(req, name) {
  const lower = name.toLowerCase();
  const found = req.headers.find(([n]) => n.toLowerCase() === lower);
  return found ? found[1].trim() : undefined;
}

function reply(status, { text, close = false } = {}) {
  const headers = [];
  let body = new Uint8Array(0);
  if (text !== undefined) {
    headers.push(['Content-Type', 'text/plain; charset=utf-8']);
    body = utf8(text);
  }
  return { tag: 'reply', val: { status, reason: undefined, headers, body, close } };
}

function refuse(why) {
  log('warn', why);
  return reply(403, { close: true });
}

export function onHttpRequest(req) {
  if (settings === null) {
    try {
      settings = loadSettings();
    } catch (e) {
      log('error', `bad plugin config: ${e.message}`);
      return reply(500, { close: true });
    }
  }
  if (!settings.webPorts.includes(req.peer.localPort)) {
    return refuse(`HTTP request received on port ${req.peer.localPort}`);
  }
  if (req.websocket.tag === 'none') {
    return reply(404, { text: 'Not Found\n' });
  }
  // A missing Host is a handshake error: the host answers 400.
  const host = header(req, 'Host');
  if (host !== undefined && !isMyself(host)) {
    return refuse(`bad Host ${JSON.stringify(host)}`);
  }
  const origin = header(req, 'Origin');
  if (settings.origins.length > 0) {
    if (origin === undefined) return refuse('no Origin');
    if (!settings.origins.includes(origin.toLowerCase())) {
      return refuse(`Origin ${JSON.stringify(origin)} not allowed`);
    }
  }
  const identity = origin === undefined ? [] : [['origin', origin]];
  return { tag: 'upgrade', val: { subprotocol: 'sip', headers: [], identity } };
}
