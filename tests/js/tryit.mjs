// The try-it softphone page as a newcomer uses it, in a real headless Chromium: two
// visitors (two browser contexts, so two cookie jars, as two tabs at two addresses
// are) open the page, are sent to the login form, log in, register, message and call
// each other, and hear each other (the page's getStats: inbound audio packets and
// energy from Chromium's fake microphone). One JSON line per step on stdout; exit 0
// when all held.
//
//   node tryit.mjs --url http://127.0.0.1:8080 --other-url http://localhost:8080
//                  [--chromium /usr/bin/chromium] [--a alice --b bob] [--password pw]

import { launchChromium } from "./chromium.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const emit = (ev, extra = {}) => process.stdout.write(JSON.stringify({ ev, ...extra }) + "\n");
const fail = async (message) => {
  emit("failed", { message });
  await browser?.close().catch(() => {});
  process.exit(1);
};
process.on("unhandledRejection", (e) => fail(String((e && e.stack) || e)));

const [nameA, nameB] = [args.a ?? "alice", args.b ?? "bob"];
const browser = await launchChromium({ executablePath: args.chromium, media: true });

// Polls `fn` in the page until it returns something truthy, for at most `ms`.
const until = async (page, what, fn, arg, ms = 20000) => {
  try {
    return await page.waitForFunction(fn, arg, { timeout: ms, polling: 100 });
  } catch {
    const state = await page.evaluate(() => JSON.stringify(window.softphone?.state ?? null));
    const status = await page.locator("#status").textContent().catch(() => "?");
    await fail(`${what}: not within ${ms} ms (state ${state}, status ${status})`);
  }
};

// A visitor: the page, the redirect to the login form, the form, back to the page.
async function visit(base, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => emit("page_error", { name, message: String(e) }));
  await page.goto(`${base}/`);
  await page.waitForURL(/\/login\?next=/, { timeout: 20000 }).catch(() => fail(`${name}: not sent to /login (${page.url()})`));
  await page.fill('input[name="user"]', name);
  await page.fill('input[name="password"]', args.password ?? "");
  await Promise.all([page.waitForURL(`${base}/`, { timeout: 20000 }), page.click('button[type="submit"]')]);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "sipwasm_session");
  if (!session || !session.httpOnly || session.sameSite !== "Strict") {
    await fail(`${name}: no HttpOnly, SameSite=Strict session cookie: ${JSON.stringify(cookies)}`);
  }
  await until(page, `${name} registers`, () => window.softphone?.state.registered === true);
  emit("registered", { name, page: page.url() });
  return page;
}

const a = await visit(args.url, nameA);
const b = await visit(args["other-url"] ?? args.url, nameB);

// A message from a to b.
await a.fill("#target", nameB);
await a.fill("#text", `hello ${nameB}`);
await a.click('#message-form button[type="submit"]');
await until(b, "the message arrives", (text) => window.softphone.state.messages.some((m) => m.text === text), `hello ${nameB}`);
emit("message", { from: nameA, to: nameB });

// A call from a to b, answered by b's Answer button.
await a.click("#call");
await until(b, `${nameB} rings`, () => window.softphone.state.call === "ringing");
await b.click("#answer");
await until(a, `${nameA} talks`, () => window.softphone.state.call === "talking");
await until(b, `${nameB} talks`, () => window.softphone.state.call === "talking");
emit("call_connected");

// Each hears the other: inbound audio packets and energy grow (polled from here: the
// stats come from a promise, which waitForFunction would take as true at once).
for (const [page, name] of [[a, nameA], [b, nameB]]) {
  const deadline = Date.now() + 30000;
  let heard = null;
  while (Date.now() < deadline) {
    heard = await page.evaluate(() => window.softphone.audioIn());
    if (heard && heard.packets > 100 && heard.energy > 0) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  if (!(heard && heard.packets > 100 && heard.energy > 0)) {
    await fail(`${name} does not hear the other within 30 s: ${JSON.stringify(heard)}`);
  }
  emit("audio", { name, ...heard });
}

// a hangs up; both are free again.
await a.click("#hangup");
await until(a, `${nameA} hangs up`, () => window.softphone.state.call === "none");
await until(b, `${nameB} sees the hang-up`, () => window.softphone.state.call === "none");
emit("hung_up");

// As someone else on a's connection: the host refuses it (identity enforced).
const refused = await a.evaluate(
  (other) =>
    new Promise((resolve) => {
      const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`, "sip");
      ws.onopen = () =>
        ws.send(
          `REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bKtry1\r\n` +
            `Max-Forwards: 70\r\nFrom: <sip:${other}@localhost>;tag=t1\r\nTo: <sip:${other}@localhost>\r\n` +
            `Call-ID: try-${Date.now()}\r\nCSeq: 1 REGISTER\r\nContact: <sip:x@x.invalid;transport=ws>\r\n` +
            `Content-Length: 0\r\n\r\n`,
        );
      ws.onmessage = (m) => {
        resolve(String(m.data).split("\r\n")[0]);
        ws.close();
      };
      ws.onerror = () => resolve("error");
    }),
  nameB,
);
if (!refused.startsWith("SIP/2.0 403")) await fail(`registering as ${nameB} on ${nameA}'s login: ${refused}`);
emit("impersonation_refused", { status: refused });

emit("done");
await browser.close();
process.exit(0);
