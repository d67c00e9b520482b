// A browser SIP stack (JsSIP or SIP.js) inside a real headless Chromium: the browser's
// own WebSocket (handshake, framing, close) and real WebRTC (getUserMedia on Chromium's
// fake devices, SDP with DTLS-SRTP). Same command/event lines as agent.mjs, the same
// stacks.mjs drives the library inside the page.
//
//   node browser.mjs --lib jssip|sipjs --url ws://127.0.0.1:8080 --user alice [--domain localhost]
//                    [--instance <uuid>] [--password <digest password>] [--chromium /usr/bin/chromium]
//                    [--audio-file tone.wav]
//
// The page comes from a small HTTP server on 127.0.0.1 (so it has an http:// Origin, as a
// web app does): the page, stacks.mjs, SIP.js's ES modules, and JsSIP bundled for the
// browser with esbuild. Chromium gathers no ICE candidates
// (`--force-webrtc-ip-handling-policy=disable_non_proxied_udp`): media would otherwise
// flow over the machine's non-loopback address, and signalling is what is tested.
// With `--audio-file`, media is tested too: the fake microphone plays that WAV file, and
// Chromium offers loopback candidates as well (`--allow-loopback-in-peer-connection`);
// the media relay answers from 127.0.0.1, so the pair that connects is on loopback.

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import esbuild from "esbuild";
import { launchChromium } from "./chromium.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const lib = args.lib ?? "jssip";
const emit = (ev, extra = {}) => process.stdout.write(JSON.stringify({ ev, ...extra }) + "\n");
process.on("uncaughtException", (e) => emit("error", { message: String((e && e.stack) || e) }));
process.on("unhandledRejection", (e) => emit("error", { message: String((e && e.stack) || e) }));

const jssipBundle =
  lib === "jssip"
    ? (
        await esbuild.build({
          entryPoints: [join(here, "node_modules/jssip/lib/JsSIP.js")],
          bundle: true,
          write: false,
          format: "esm",
          platform: "browser",
          logLevel: "silent",
        })
      ).outputFiles[0].text
    : "";

const page_html = `<!doctype html><meta charset="utf-8"><title>sipwasm test agent</title>
<script type="module">
import { jssipAgent, sipjsAgent, dispatch } from "/stacks.mjs";
const env = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const emit = (ev, extra = {}) => window.agentEvent(JSON.stringify({ ev, ...extra }));
window.addEventListener("error", (e) => emit("error", { message: String(e.error?.stack || e.message) }));
window.addEventListener("unhandledrejection", (e) => emit("error", { message: String(e.reason?.stack || e.reason) }));
const agent = env.lib === "sipjs"
  ? await sipjsAgent({ ...env, emit, SIP: await import("/sip.js/lib/index.js") })
  : await jssipAgent({ ...env, emit, JsSIP: (await import("/jssip.mjs")).default,
      media: { mediaConstraints: { audio: true, video: false } } });
window.agentCommand = (line) => dispatch(agent, line, emit);
</script>`;

const types = { ".mjs": "text/javascript", ".js": "text/javascript", ".html": "text/html" };
const http = createServer(async (req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  try {
    let body;
    let type = "text/javascript";
    if (path === "/") {
      body = page_html;
      type = "text/html";
    } else if (path === "/stacks.mjs") {
      body = await readFile(join(here, "stacks.mjs"));
    } else if (path === "/jssip.mjs") {
      body = jssipBundle;
    } else if (path.startsWith("/sip.js/lib/")) {
      const root = join(here, "node_modules/sip.js/lib");
      const file = normalize(join(root, path.slice("/sip.js/lib/".length)));
      if (!file.startsWith(root + "/")) throw new Error("outside");
      body = await readFile(file);
      type = types[file.slice(file.lastIndexOf("."))] ?? "application/octet-stream";
    } else {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": type }).end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((ok) => http.listen(0, "127.0.0.1", ok));
const origin = `http://127.0.0.1:${http.address().port}`;

const browser = await launchChromium({
  executablePath: args.chromium,
  audioFile: args["audio-file"],
  ignoreCertificateErrors: Boolean(args.url?.startsWith("wss://")),
});
const quit = async (code) => {
  await browser.close().catch(() => {});
  http.close();
  process.exit(code);
};
const page = await browser.newPage();
page.on("crash", () => {
  emit("error", { message: "page crashed" });
  quit(1);
});
await page.exposeFunction("agentEvent", (line) => process.stdout.write(line + "\n"));
const env = {
  lib,
  url: args.url,
  user: args.user,
  domain: args.domain ?? "localhost",
  instance: args.instance,
  password: args.password,
};
await page.goto(`${origin}/#${encodeURIComponent(JSON.stringify(env))}`);

const rl = createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  try {
    await page.waitForFunction(() => typeof window.agentCommand === "function", null, { timeout: 10_000 });
    const wasQuit = await page.evaluate((l) => window.agentCommand(l), line);
    if (wasQuit) setTimeout(() => quit(0), 100);
  } catch (e) {
    emit("error", { message: String((e && e.stack) || e) });
  }
});
rl.on("close", () => quit(0));
