// A browser SIP stack (JsSIP or SIP.js) under Node, driven by JSON lines on stdin and
// reporting JSON lines on stdout, so the Rust tests can use real browser stacks as
// peers of sipwasm.
//
//   node agent.mjs --lib jssip|sipjs --url ws://127.0.0.1:8080 --user alice [--domain localhost]
//                  [--instance <uuid>] [--password <digest password>] [--media webrtc|rtp]
//
// Commands: {"cmd":"register"} {"cmd":"unregister"} {"cmd":"call","target":"bob"}
//           {"cmd":"answer"} {"cmd":"reject","status":486} {"cmd":"hangup"}
//           {"cmd":"message","target":"bob","body":"hi"} {"cmd":"quit"}
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

// ---------------------------------------------------------------- JsSIP

async function jssipAgent() {
  globalThis.window = globalThis;
  globalThis.WebSocket = WebSocket;
  globalThis.RTCPeerConnection = FakePeerConnection;
  globalThis.RTCSessionDescription = FakeSessionDescription;
  const JsSIP = (await import("jssip")).default;
  const socket = new JsSIP.WebSocketInterface(url);
  const ua = new JsSIP.UA({
    sockets: [socket],
    uri: `sip:${user}@${domain}`,
    register: false,
    session_timers: false,
    connection_recovery_min_interval: 60,
    connection_recovery_max_interval: 60,
    ...(args.instance ? { instance_id: args.instance } : {}),
    ...(args.password ? { password: args.password } : {}),
  });
  let session = null;
  ua.on("connected", () => emit("ready"));
  ua.on("registered", () => emit("registered"));
  ua.on("unregistered", () => emit("unregistered"));
  ua.on("registrationFailed", (e) => emit("registration_failed", { status: e.response?.status_code ?? 0, cause: e.cause }));
  ua.on("newRTCSession", (e) => {
    if (e.originator !== "remote") return;
    session = e.session;
    watch(session);
    emit("incoming", { from: e.request.from.uri.toString() });
  });
  ua.on("newMessage", (e) => {
    if (e.originator !== "remote") return;
    emit("message", { from: e.request.from.uri.toString(), body: e.request.body });
  });
  const watch = (s) => {
    s.on("progress", (e) => emit("progress", { status: e.response?.status_code ?? 180 }));
    s.on("accepted", () => emit("accepted"));
    s.on("confirmed", () => emit("confirmed"));
    s.on("ended", (e) => emit("ended", { by: e.originator, cause: e.cause }));
    s.on("failed", (e) => emit("failed", { by: e.originator, status: e.message?.status_code ?? 0, cause: e.cause }));
  };
  ua.start();
  return {
    register: () => ua.register(),
    unregister: () => ua.unregister(),
    call: (c) => {
      session = ua.call(`sip:${c.target}@${domain}`, { mediaStream: fakeStream, pcConfig: {} });
      watch(session);
    },
    answer: () => session.answer({ mediaStream: fakeStream }),
    reject: (c) => session.terminate({ status_code: c.status ?? 486 }),
    hangup: () => session.terminate(),
    message: (c) =>
      ua.sendMessage(`sip:${c.target}@${domain}`, c.body ?? "", {
        eventHandlers: {
          succeeded: () => emit("message_sent"),
          failed: (e) => emit("message_failed", { status: e.response?.status_code ?? 0, cause: e.cause }),
        },
      }),
    quit: () => ua.stop(),
  };
}

// ---------------------------------------------------------------- SIP.js

async function sipjsAgent() {
  globalThis.WebSocket = WebSocket;
  const SIP = await import("sip.js");
  const { UserAgent, Registerer, Inviter, Messager, SessionState, RegistererState } = SIP;
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
  let session = null;
  const watch = (s) => {
    s.stateChange.addListener((state) => {
      if (state === SessionState.Established) emit("accepted");
      if (state === SessionState.Terminated) emit("ended", { by: s.__byLocal ? "local" : "remote" });
    });
  };
  const ua = new UserAgent({
    uri: UserAgent.makeURI(`sip:${user}@${domain}`),
    transportOptions: { server: url, traceSip: false },
    sessionDescriptionHandlerFactory: () => new FakeSdh(),
    logLevel: "error",
    ...(args.instance ? { instanceId: args.instance, instanceIdAlwaysAdded: true } : {}),
    ...(args.password ? { authorizationUsername: user, authorizationPassword: args.password } : {}),
    delegate: {
      onInvite: (invitation) => {
        session = invitation;
        watch(session);
        emit("incoming", { from: invitation.remoteIdentity.uri.toString() });
      },
      onMessage: (message) => {
        emit("message", { from: message.request.from.uri.toString(), body: message.request.body });
        message.accept();
      },
    },
  });
  const registerer = new Registerer(ua, { expires: 600 });
  registerer.stateChange.addListener((s) => {
    if (s === RegistererState.Registered) emit("registered");
    if (s === RegistererState.Unregistered) emit("unregistered");
  });
  await ua.start();
  emit("ready");
  return {
    register: () =>
      registerer.register({
        requestDelegate: {
          onReject: (r) => emit("registration_failed", { status: r.message.statusCode }),
        },
      }),
    unregister: () => registerer.unregister(),
    call: (c) => {
      const target = UserAgent.makeURI(`sip:${c.target}@${domain}`);
      session = new Inviter(ua, target);
      watch(session);
      session.invite({
        requestDelegate: {
          onProgress: (r) => emit("progress", { status: r.message.statusCode }),
          onReject: (r) => emit("failed", { status: r.message.statusCode }),
        },
      });
    },
    answer: () => session.accept(),
    reject: (c) => session.reject({ statusCode: c.status ?? 486 }),
    hangup: () => {
      session.__byLocal = true;
      if (session.state === SessionState.Established) return session.bye();
      return session.cancel ? session.cancel() : session.reject();
    },
    message: (c) => {
      const m = new Messager(ua, UserAgent.makeURI(`sip:${c.target}@${domain}`), c.body ?? "");
      m.message({
        requestDelegate: {
          onAccept: () => emit("message_sent"),
          onReject: (r) => emit("message_failed", { status: r.message.statusCode }),
        },
      });
    },
    quit: () => ua.stop(),
  };
}

// ---------------------------------------------------------------- main

const agent = lib === "sipjs" ? await sipjsAgent() : await jssipAgent();
const rl = createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  let c;
  try {
    c = JSON.parse(line);
  } catch {
    return emit("error", { message: `bad command: ${line}` });
  }
  try {
    const f = agent[c.cmd];
    if (!f) return emit("error", { message: `unknown command ${c.cmd}` });
    await f(c);
    if (c.cmd === "quit") setTimeout(() => process.exit(0), 100);
  } catch (e) {
    emit("error", { message: String(e && e.stack || e) });
  }
});
rl.on("close", () => process.exit(0));
