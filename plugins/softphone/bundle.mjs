// Bundles JsSIP (from node_modules, pinned in package-lock.json) into one minified
// browser script that sets `window.JsSIP`; build.rs runs it and the plugin embeds the
// result, so the page fetches nothing from anywhere else.
//
//   node bundle.mjs OUT.js
import esbuild from "esbuild";

const out = process.argv[2];
if (!out) {
  console.error("usage: node bundle.mjs OUT.js");
  process.exit(2);
}
await esbuild.build({
  entryPoints: ["node_modules/jssip/lib/JsSIP.js"],
  bundle: true,
  minify: true,
  format: "iife",
  globalName: "JsSIP",
  platform: "browser",
  target: ["chrome100", "firefox100", "safari15"],
  legalComments: "inline",
  outfile: out,
  logLevel: "warning",
});
