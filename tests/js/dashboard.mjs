// Drives the admin dashboard (/ui/) in headless Chromium for the Rust test, which
// judges what this reports.
//
//   node dashboard.mjs '{"url": "http://127.0.0.1:PORT/ui/#token=TOKEN", "aor": "sip:alice@…",
//                        "closeFlow": 7 | null, "screenshot": "/tmp/x.png", "timeoutMs": 2000,
//                        "chromium": "/usr/bin/chromium" (optional), "waitForGo": bool}'
//
// Opens the page. With `waitForGo`, it waits until the page shows the server's data
// (the plugin table filled), prints {"ready": true} and waits for a line on stdin (the
// test registers its client, then writes it): the time to show the registration counts
// from that line, so the page must update live. Then it waits (at most timeoutMs) for
// the registration row of `aor`
// (`tr.registration[data-aor="…"]`), then, with `closeFlow`, clicks that flow's close
// button (`button.close-flow[data-flow-id="…"]`) and waits (at most 5 s) for its row
// (`tr.flow[data-flow-id="…"]`) to go; takes a full-page screenshot; prints one JSON line:
//
//   {"registrationShownMs": n | null, "flowClosed": bool | null,
//    "consoleErrors": [...], "failedRequests": [...]}
//
// registrationShownMs counts from the start of the navigation (null: not shown in time).
// consoleErrors: console errors and warnings, and uncaught page errors. failedRequests:
// requests that failed and answers with a status of 400 or more. Exit 0; on any other
// failure `{"fatal": "…"}` and exit 1.

import { mkdir } from "node:fs/promises";
import { createInterface } from "node:readline";
import { dirname } from "node:path";
import { launchChromium } from "./chromium.mjs";

const FLOW_CLOSE_MS = 5000;

let browser = null;
let done = false;

function finish(obj, code) {
  if (done) return;
  done = true;
  const close = browser ? Promise.race([browser.close().catch(() => {}), sleep(5000)]) : Promise.resolve();
  close.then(() => process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(code)));
}

function fatal(e) {
  finish({ fatal: String((e && e.message) || e) }, 1);
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// A CSS string for an attribute selector.
const cssString = (s) => `"${String(s).replace(/["\\]/g, "\\$&").replace(/\n/g, "\\a ")}"`;

process.on("uncaughtException", fatal);
process.on("unhandledRejection", fatal);

async function main() {
  const cfg = JSON.parse(process.argv[2] ?? "");
  if (!cfg || typeof cfg.url !== "string") throw new Error("config: url missing");
  const timeoutMs = Number.isFinite(cfg.timeoutMs) ? cfg.timeoutMs : 2000;
  const closeFlow = cfg.closeFlow ?? null;

  // Nothing may hang: the whole run has a deadline.
  setTimeout(() => fatal(new Error("dashboard driver: overall deadline passed")), timeoutMs + FLOW_CLOSE_MS + 60_000).unref();

  browser = await launchChromium(cfg.chromium ? { executablePath: cfg.chromium } : {});
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.setDefaultNavigationTimeout(15_000);

  const consoleErrors = [];
  const failedRequests = [];
  page.on("console", (m) => {
    const type = m.type();
    if (type !== "error" && type !== "warning") return;
    const loc = m.location();
    const where = loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : "";
    consoleErrors.push(`${type}: ${m.text()}${where}`);
  });
  page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${(e && e.message) || e}`));
  page.on("crash", () => consoleErrors.push("page crashed"));
  page.on("requestfailed", (r) => {
    failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText ?? "failed"}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) failedRequests.push(`${r.request().method()} ${r.url()}: ${r.status()}`);
  });

  let started = Date.now();
  await page.goto(cfg.url, { waitUntil: "domcontentloaded" });
  if (cfg.waitForGo) {
    await page.waitForSelector("tr.plugin", { state: "visible", timeout: 15_000 });
    process.stdout.write(JSON.stringify({ ready: true }) + "\n");
    await new Promise((ok, fail) => {
      const rl = createInterface({ input: process.stdin });
      let got = false;
      rl.once("close", () => {
        if (!got) fail(new Error("stdin closed before the go line"));
      });
      rl.once("line", () => {
        got = true;
        ok();
        rl.close();
      });
    });
    started = Date.now();
  }

  let registrationShownMs = null;
  if (cfg.aor != null) {
    try {
      await page.waitForSelector(`tr.registration[data-aor=${cssString(cfg.aor)}]`, {
        state: "visible",
        timeout: Math.max(1, timeoutMs),
      });
      registrationShownMs = Date.now() - started;
    } catch (e) {
      if (e?.name !== "TimeoutError") throw e;
    }
  }

  let flowClosed = null;
  if (closeFlow != null) {
    const id = cssString(String(closeFlow));
    flowClosed = false;
    try {
      await page.click(`button.close-flow[data-flow-id=${id}]`, { timeout: FLOW_CLOSE_MS });
      await page.waitForSelector(`tr.flow[data-flow-id=${id}]`, { state: "detached", timeout: FLOW_CLOSE_MS });
      flowClosed = true;
    } catch (e) {
      if (e?.name !== "TimeoutError") throw e;
    }
  }

  if (cfg.screenshot) {
    await mkdir(dirname(cfg.screenshot), { recursive: true });
    await page.screenshot({ path: cfg.screenshot, fullPage: true, timeout: 15_000 });
  }

  // What happened up to now (closing the browser afterwards aborts the poll under way).
  const report = {
    registrationShownMs,
    flowClosed,
    consoleErrors: [...consoleErrors],
    failedRequests: [...failedRequests],
  };
  finish(report, 0);
}

main().catch(fatal);
