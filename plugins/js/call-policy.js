// call-policy in JavaScript: a `sip-router` plugin on the SDK in `sipwasm/`, the same
// blocked numbers and prefix relays as the Rust `plugins/call-policy`. Built with jco:
//
//   npx jco componentize call-policy.js --wit ../../wit --world-name sip-router \
//       --backend qjs --backend-qjs-disable-async --out call-policy.wasm
//
//   INVITE/MESSAGE to a blocked number     -> 403 Blocked
//   a Request-URI user with a relay prefix -> relay to sip:<user>@<next hop>
//   anything else                          -> continue (registrar, proxy)
//
// and a log line for each connection that carried SIP and closed.
//
// Plugin configuration:
//   blocked = ["+15550100", "666"]
//   relay = { "9" = "127.0.0.1:5070" }

import { CONTINUE, config, error, info, relay, ruriUser, sipReply } from './sipwasm/plugin.js';

const SCHEMA = {
  blocked: { kind: 'strings', default: [] },
  relay: { kind: 'table', default: {} },
};

function settings() {
  const s = config(SCHEMA);
  if (!Object.values(s.relay).every((v) => typeof v === 'string')) {
    throw new Error('relay must map prefixes to next hops (strings)');
  }
  return s;
}

export function onSipRequest(req) {
  let s;
  try {
    s = settings();
  } catch (e) {
    error(`bad plugin config: ${e.message}`);
    return sipReply(500, { reason: 'Plugin Misconfigured' });
  }
  const user = ruriUser(req);
  if (user === undefined) return CONTINUE;
  if ((req.method === 'INVITE' || req.method === 'MESSAGE') && s.blocked.includes(user)) {
    info(`blocked ${req.method} to ${user} from ${req.source.remoteAddr}:${req.source.remotePort}`);
    return sipReply(403, { reason: 'Blocked' });
  }
  // The longest matching prefix wins.
  const prefix = Object.keys(s.relay)
    .filter((p) => user.startsWith(p))
    .sort((a, b) => b.length - a.length)[0];
  if (prefix !== undefined) {
    const hop = s.relay[prefix];
    // A gateway set of the server: the host puts the user at the member it picks.
    return relay(hop.startsWith('gw:') ? hop : `sip:${user}@${hop}`);
  }
  return CONTINUE;
}

export function onFlowClosed(closed) {
  const f = closed.flow;
  const who = f.identity.map(([k, v]) => `${k}=${v}`).join(',');
  info(`flow closed: ${f.transport} ${f.remoteAddr}:${f.remotePort} identity [${who}] bindings lost: [${closed.aors.join(', ')}]`);
}
