// token-login in JavaScript: the same login as the Rust `plugins/token-login` (see
// docs/login.md), on the SDK in `sipwasm/`. Built with jco (QuickJS):
//
//   npm ci --prefix plugins/js && npm run --prefix plugins/js build
//
//   token = EXPIRY ":" USER ":" MAC, MAC = base64url(HMAC-SHA-256(key, EXPIRY ":" USER))
//
//   not a WebSocket handshake                 -> 404
//   Host not ours, Origin not allowed         -> 403
//   no token                                  -> 403 Token Required
//   malformed, wrong MAC, expiry too far away -> 403 Invalid Token
//   expired                                   -> 403 Token Expired
//   valid                                     -> upgrade, identity user=USER (domain=...)
//
// Plugin configuration: key (default "login", granted by the plugin's `keys`),
// max-lifetime (seconds, default 86400), domain, allowed-origins.

import {
  base64urlDecode,
  config,
  error,
  header,
  hmacVerify,
  hostIsOurs,
  isWebSocket,
  nowSeconds,
  query,
  reply,
  upgrade,
  warn,
} from './sipwasm/plugin.js';

const SCHEMA = {
  key: { kind: 'string', default: 'login' },
  'max-lifetime': { kind: 'integer', default: 86400 },
  domain: { kind: 'string', default: '' },
  'allowed-origins': { kind: 'strings', default: [] },
};

class Refusal extends Error {
  constructor(reason, why) {
    super(why);
    this.reason = reason;
  }
}

// The user a token names, if it is valid at `now`; throws a Refusal otherwise.
function check(token, settings, now) {
  const invalid = (why) => new Refusal('Invalid Token', why);
  const lastColon = token.lastIndexOf(':');
  if (lastColon < 0) throw invalid('no MAC');
  const signed = token.slice(0, lastColon);
  const firstColon = signed.indexOf(':');
  if (firstColon < 0) throw invalid('no user');
  const expiryText = signed.slice(0, firstColon);
  const user = signed.slice(firstColon + 1);
  if (!/^[0-9]{1,19}$/.test(expiryText)) throw invalid('expiry is not a number');
  const expiry = Number(expiryText);
  if (user === '' || user.length > 256 || /[\u0000-\u001f\u007f-\u009f]/.test(user)) {
    throw invalid('user is empty, too long or has control characters');
  }
  const mac = base64urlDecode(token.slice(lastColon + 1));
  if (mac === undefined) throw invalid('MAC is not base64url');
  // The MAC first: an expiry or user an attacker made up says nothing.
  if (!hmacVerify(settings.key, signed, mac)) throw invalid('wrong MAC');
  if (expiry <= now) throw new Refusal('Token Expired', 'token expired');
  if (expiry - now > settings['max-lifetime']) throw invalid('expiry further away than max-lifetime');
  return user;
}

function refuse(reason, why, peer) {
  warn(`login refused for ${peer}: ${why}`);
  return reply(403, { reason, text: `${reason}\n`, close: true });
}

export function onHttpRequest(req) {
  let settings;
  try {
    settings = config(SCHEMA);
  } catch (e) {
    error(`bad plugin config: ${e.message}`);
    return reply(500, { close: true });
  }
  const peer = req.peer.remoteAddr;
  if (!isWebSocket(req)) return reply(404, { text: 'Not Found\n' });
  if (header(req, 'Host') !== undefined && !hostIsOurs(req)) {
    return refuse('Forbidden', `bad Host ${JSON.stringify(header(req, 'Host'))}`, peer);
  }
  const origins = settings['allowed-origins'].map((o) => o.toLowerCase());
  if (origins.length > 0 && !origins.includes((header(req, 'Origin') ?? '').toLowerCase())) {
    return refuse('Forbidden', 'Origin not allowed', peer);
  }
  const token = query(req, 'token') ?? '';
  if (token === '') return refuse('Token Required', 'no token', peer);
  try {
    const user = check(token, settings, nowSeconds());
    const identity = [['user', user], ['login', 'token']];
    if (settings.domain !== '') identity.push(['domain', settings.domain]);
    return upgrade({ identity });
  } catch (e) {
    if (e instanceof Refusal) return refuse(e.reason, e.message, peer);
    throw e;
  }
}
