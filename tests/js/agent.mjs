// A browser SIP stack (JsSIP or SIP.js) under Node, driven by JSON lines on stdin and
// reporting JSON lines on stdout, so the Rust tests can use real browser stacks as
// peers of sipwasm. What the agent does is in stacks.mjs, shared with browser.mjs
// (the same stacks inside Chromium, with real WebRTC).
//
//   node agent.mjs --lib jssip|sipjs --url ws://127.0.0.1:8080 --user alice [--domain localhost]
//                  [--instance <uuid>] [--password <digest password>] [--media webrtc|rtp]
//
// Commands: {"cmd":"register"} {"cmd":"unregister"} {"cmd":"call","target":"bob"}
//           {"cmd":"answer"} {"cmd":"reject","status":486} {"cmd":"hangup"}
//           {"cmd":"message","target":"bob","body":"hi"} {"cmd":"quit"}
//           {"cmd":"hold"} {"cmd":"unhold"} (JsSIP; events "hold"/"unhold" with "by", and
//           "held"/"resumed" when its own re-INVITE succeeded)
// Events:   {"ev":"ready"} {"ev":"registered"} {"ev":"unregistered"} {"ev":"incoming",...}
//           {"ev":"progress","status":180} {"ev":"accepted"} {"ev":"ended","by":...}
//           {"ev":"failed","status":N} {"ev":"message",...} {"ev":"message_sent"}
//           {"ev":"message_failed","status":N} {"ev":"error","message":...}
//
// Node has no WebRTC: a stand-in RTCPeerConnection (JsSIP) or session description
// handler (SIP.js) produces a fixed audio SDP. Signalling is what is tested. Its profile
// is WebRTC's (UDP/TLS/RTP/SAVPF) unless `--media rtp` asks for plain RTP/AVP, which a
// phone without DTLS-SRTP accepts (as it would behind a media gateway).

import { createInterface } from "node:readline";
import WebSocket from "ws";
import { dispatch, jssipAgent, sipjsAgent } from "./stacks.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const lib = args.lib ?? "jssip";
const domain = args.domain ?? "localhost";
const user = args.user;
const url = args.url;

const emit = (ev, extra = {}) => process.stdout.write(JSON.stringify({ ev, ...extra }) + "\n");
process.on("uncaughtException", (e) => emit("error", { message: String(e && e.stack || e) }));
process.on("unhandledRejection", (e) => emit("error", { message: String(e && e.stack || e) }));

const SDP = [
  "v=0",
  `o=- ${Date.now()} 1 IN IP4 127.0.0.1`,
  "s=-",
  "c=IN IP4 127.0.0.1",
  "t=0 0",
  args.media === "rtp" ? "m=audio 9 RTP/AVP 0" : "m=audio 9 UDP/TLS/RTP/SAVPF 0",
  "a=rtpmap:0 PCMU/8000",
  "a=sendrecv",
  "",
].join("\r\n");

// ---------------------------------------------------------------- stand-ins for WebRTC

class FakeSessionDescription {
  constructor({ type, sdp }) {
    this.type = type;
    this.sdp = sdp;
  }
}

class FakePeerConnection {
  constructor() {
    this.listeners = {};
    this.signalingState = "stable";
    this.iceGatheringState = "complete";
    this.iceConnectionState = "connected";
    this.localDescription = null;
    this.remoteDescription = null;
  }
  addEventListener(name, fn) {
    (this.listeners[name] ??= []).push(fn);
  }
  removeEventListener(name, fn) {
    this.listeners[name] = (this.listeners[name] ?? []).filter((f) => f !== fn);
  }
  addTrack() {}
  getSenders() {
    return [];
  }
  getReceivers() {
    return [];
  }
  getLocalStreams() {
    return [];
  }
  getRemoteStreams() {
    return [];
  }
  async createOffer() {
    return new FakeSessionDescription({ type: "offer", sdp: SDP });
  }
  async createAnswer() {
    return new FakeSessionDescription({ type: "answer", sdp: SDP });
  }
  async setLocalDescription(d) {
    this.localDescription = d;
    this.signalingState = d.type === "offer" ? "have-local-offer" : "stable";
  }
  async setRemoteDescription(d) {
    this.remoteDescription = d;
    this.signalingState = d.type === "offer" ? "have-remote-offer" : "stable";
  }
  close() {
    this.signalingState = "closed";
  }
}

const fakeStream = { getTracks: () => [], getAudioTracks: () => [], getVideoTracks: () => [] };

// ---------------------------------------------------------------- main

const env = { emit, url, user, domain, instance: args.instance, password: args.password };
let agent;
if (lib === "sipjs") {
  globalThis.WebSocket = WebSocket;
  class FakeSdh {
    async getDescription() {
      return { body: SDP, contentType: "application/sdp" };
    }
    async setDescription() {}
    hasDescription(contentType) {
      return contentType === "application/sdp";
    }
    rollbackDescription() {
      return Promise.resolve();
    }
    sendDtmf() {
      return false;
    }
    close() {}
  }
  agent = await sipjsAgent({ ...env, SIP: await import("sip.js"), sdhFactory: () => new FakeSdh() });
} else {
  globalThis.window = globalThis;
  globalThis.WebSocket = WebSocket;
  globalThis.RTCPeerConnection = FakePeerConnection;
  globalThis.RTCSessionDescription = FakeSessionDescription;
  const JsSIP = (await import("jssip")).default;
  agent = await jssipAgent({ ...env, JsSIP, media: { mediaStream: fakeStream } });
}
const rl = createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  if (await dispatch(agent, line, emit)) setTimeout(() => process.exit(0), 100);
});
rl.on("close", () => process.exit(0));
