// seed-policy in JavaScript: the same WebSocket admission policy as the Rust
// `plugins/seed-policy`, on the SDK in `sipwasm/`, built into a component with jco
// (QuickJS engine):
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

import { config, error, header, hostIsOurs, reply, upgrade, warn } from './sipwasm/plugin.js';

const SCHEMA = {
  'web-ports': { kind: 'integers', default: [80, 443] },
  'allowed-origins': { kind: 'strings', default: [] },
};

function refuse(why) {
  warn(why);
  return reply(403, { close: true });
}

export function onHttpRequest(req) {
  let settings;
  try {
    settings = config(SCHEMA);
    if (!settings['web-ports'].every((p) => p > 0 && p < 65536)) {
      throw new Error('web-ports must be a list of port numbers');
    }
  } catch (e) {
    error(`bad plugin config: ${e.message}`);
    return reply(500, { close: true });
  }
  if (!settings['web-ports'].includes(req.peer.localPort)) {
    return refuse(`HTTP request received on port ${req.peer.localPort}`);
  }
  // An invalid handshake goes on to `upgrade`, which the host answers with its error.
  if (req.websocket.tag === 'none') {
    return reply(404, { text: 'Not Found\n' });
  }
  // A missing Host is a handshake error: the host answers 400.
  const host = header(req, 'Host');
  if (host !== undefined && !hostIsOurs(req)) {
    return refuse(`bad Host ${JSON.stringify(host)}`);
  }
  const origin = header(req, 'Origin');
  const origins = settings['allowed-origins'].map((o) => o.toLowerCase());
  if (origins.length > 0) {
    if (origin === undefined) return refuse('no Origin');
    if (!origins.includes(origin.toLowerCase())) {
      return refuse(`Origin ${JSON.stringify(origin)} not allowed`);
    }
  }
  return upgrade({ identity: origin === undefined ? [] : [['origin', origin]] });
}
