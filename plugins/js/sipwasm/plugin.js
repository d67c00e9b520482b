// The sipwasm JavaScript SDK: what `core.js` has (request helpers, decision builders,
// typed configuration, UTF-8, base64url) plus the host's imports: logging, `isMyself`,
// the plugin's configuration, the named keys. Plugins import from here:
//
//   import { query, reply, upgrade, config, hmacVerify } from './sipwasm/plugin.js';

import { log, isMyself, pluginConfig } from 'sipwasm:plugin/host@0.2.1';
import { hmacSign as hostSign, hmacVerify as hostVerify } from 'sipwasm:plugin/keys@0.2.1';
import { header, parseConfig, utf8 } from './core.js';

export * from './core.js';
export { isMyself };

/** Logs at info, warn or error level (the server log, tagged with the plugin). */
export const info = (message) => log('info', String(message));
export const warn = (message) => log('warn', String(message));
export const error = (message) => log('error', String(message));

/** Whether the request's Host header names this server. */
export function hostIsOurs(req) {
  const h = header(req, 'Host');
  return h !== undefined && isMyself(h);
}

// Read once per instance: the host hands every call of an instance the same table.
let configured;

/**
 * The plugin's `config` table read against `schema` (see `parseConfig`), once per
 * instance; throws (naming the key) when it does not fit.
 */
export function config(schema) {
  if (configured === undefined) configured = parseConfig(pluginConfig(), schema);
  return configured;
}

const bytesOf = (data) => (data instanceof Uint8Array ? data : utf8(data));

/** HMAC-SHA-256 of `data` (text or bytes) under the granted key `key`; throws why not. */
export function hmacSign(key, data) {
  return hostSign(key, bytesOf(data));
}

/** Whether `mac` (bytes) is the HMAC-SHA-256 of `data` under `key` (constant time). */
export function hmacVerify(key, data, mac) {
  return hostVerify(key, bytesOf(data), mac);
}

/** Seconds since the Unix epoch (the WASI wall clock). */
export function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}
