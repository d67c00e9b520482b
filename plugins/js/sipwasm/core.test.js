// Tests of the SDK's host-free part: `node --test plugins/js/sipwasm/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  base64urlDecode,
  base64urlEncode,
  cookie,
  fromUtf8,
  header,
  headerValues,
  isWebSocket,
  parseConfig,
  path,
  query,
  reply,
  upgrade,
  utf8,
} from './core.js';

const req = (target, headers = []) => ({ target, headers, websocket: { tag: 'none' } });

test('utf8 encodes as TextEncoder does and decodes back', () => {
  const enc = new TextEncoder();
  for (const s of ['', 'ascii', 'héllo', '€', '𝄞 clef', 'mixed ✓ 𝄞 é']) {
    assert.deepEqual(utf8(s), enc.encode(s));
    assert.equal(fromUtf8(utf8(s)), s);
  }
  // Malformed: a lone continuation, an overlong form, a truncated sequence, a surrogate.
  assert.equal(fromUtf8(new Uint8Array([0x80, 0x41])), '\ufffdA');
  assert.equal(fromUtf8(new Uint8Array([0xc0, 0xaf])), '\ufffd\ufffd');
  assert.equal(fromUtf8(new Uint8Array([0xe2, 0x82])), '\ufffd\ufffd');
  assert.equal(fromUtf8(new Uint8Array([0xed, 0xa0, 0x80])), '\ufffd\ufffd\ufffd');
});

test('headers by name, case-insensitive, lists split', () => {
  const r = req('/', [['Host', ' a.example '], ['X-List', 'a, b'], ['x-list', 'c']]);
  assert.equal(header(r, 'host'), 'a.example');
  assert.equal(header(r, 'nope'), undefined);
  assert.deepEqual(headerValues(r, 'X-LIST'), ['a', 'b', 'c']);
});

test('path, query and cookies', () => {
  const r = req('/ws/x?token=1%3Aalice%3Amac&a+b=c+d&flag&t=%E2%82%AC#frag', [
    ['Cookie', 'a=1; session=abc.def'],
    ['Cookie', 'b=2'],
  ]);
  assert.equal(path(r), '/ws/x');
  assert.equal(query(r, 'token'), '1:alice:mac');
  assert.equal(query(r, 'a b'), 'c d');
  assert.equal(query(r, 'flag'), '');
  assert.equal(query(r, 't'), '€');
  assert.equal(query(r, 'frag'), undefined);
  assert.equal(query(req('/'), 'x'), undefined);
  assert.equal(cookie(r, 'session'), 'abc.def');
  assert.equal(cookie(r, 'b'), '2');
  assert.equal(cookie(r, 'c'), undefined);
  assert.equal(isWebSocket(r), false);
  assert.equal(isWebSocket({ websocket: { tag: 'offer', val: ['sip'] } }), true);
});

test('decision builders', () => {
  const t = reply(403, { text: 'Nope\n', close: true });
  assert.equal(t.tag, 'reply');
  assert.equal(t.val.status, 403);
  assert.deepEqual(t.val.headers, [['Content-Type', 'text/plain; charset=utf-8']]);
  assert.equal(fromUtf8(t.val.body), 'Nope\n');
  assert.equal(t.val.close, true);
  const j = reply(200, { json: { ok: true }, headers: [['Cache-Control', 'no-store']] });
  assert.deepEqual(j.val.headers, [['Cache-Control', 'no-store'], ['Content-Type', 'application/json']]);
  assert.equal(fromUtf8(j.val.body), '{"ok":true}');
  const u = upgrade({ identity: { user: 'alice', login: 'token' } });
  assert.deepEqual(u, {
    tag: 'upgrade',
    val: { subprotocol: 'sip', headers: [], identity: [['user', 'alice'], ['login', 'token']] },
  });
});

test('typed configuration names the key that does not fit', () => {
  const schema = { key: { kind: 'string', default: 'login' }, 'max-lifetime': { kind: 'integer', default: 86400 } };
  assert.deepEqual(parseConfig('{}', schema), { key: 'login', 'max-lifetime': 86400 });
  assert.deepEqual(parseConfig('{"key":"k2"}', schema), { key: 'k2', 'max-lifetime': 86400 });
  assert.throws(() => parseConfig('{"kee":"x"}', schema), /unknown config key "kee"/);
  assert.throws(() => parseConfig('{"max-lifetime":"1d"}', schema), /"max-lifetime" must be an integer/);
  assert.throws(() => parseConfig('{}', { need: { kind: 'strings' } }), /"need" is required/);
});

test('base64url as RFC 4648 section 5 has it, unpadded, one spelling', () => {
  const vectors = [['', ''], ['f', 'Zg'], ['fo', 'Zm8'], ['foo', 'Zm9v'], ['foob', 'Zm9vYg'], ['fooba', 'Zm9vYmE'], ['foobar', 'Zm9vYmFy']];
  for (const [plain, coded] of vectors) {
    assert.equal(base64urlEncode(utf8(plain)), coded);
    assert.deepEqual(base64urlDecode(coded), utf8(plain));
  }
  assert.equal(base64urlEncode(new Uint8Array([0xfb, 0xff])), '-_8');
  assert.equal(base64urlDecode('+/8'), undefined);
  assert.equal(base64urlDecode('Zg=='), undefined);
  assert.equal(base64urlDecode('Z'), undefined);
  assert.equal(base64urlDecode('Zh'), undefined);
  for (let n = 0; n < 40; n++) {
    const bytes = new Uint8Array(n).map((_, i) => (i * 37) & 255);
    assert.deepEqual(base64urlDecode(base64urlEncode(bytes)), bytes);
    assert.equal(base64urlEncode(bytes), Buffer.from(bytes).toString('base64url'));
  }
});
