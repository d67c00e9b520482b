// The test agent's behaviour on top of JsSIP or SIP.js, shared by the Node agent
// (agent.mjs, stand-in WebRTC) and the Chromium one (browser.mjs, real WebRTC): the same
// commands and events either way. Plain ECMAScript, no Node imports, so a page can
// import it too.
//
// `env` carries what differs: `emit(ev, extra)`, `url`, `user`, `domain`, `instance`,
// `password`; for JsSIP the library as `JsSIP` and the call options `media` (a stream,
// or constraints for getUserMedia); for SIP.js the library as `SIP` and an optional
// `sdhFactory` (the browser's default is used when absent).

export async function jssipAgent(env) {
  const { JsSIP, emit, url, user, domain } = env;
  const socket = new JsSIP.WebSocketInterface(url);
  const ua = new JsSIP.UA({
    sockets: [socket],
    uri: `sip:${user}@${domain}`,
    register: false,
    session_timers: false,
    connection_recovery_min_interval: 60,
    connection_recovery_max_interval: 60,
    ...(env.instance ? { instance_id: env.instance } : {}),
    ...(env.password ? { password: env.password } : {}),
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
    s.on("accepted", () => {
      // Play what comes in, as a web phone does: Chromium measures the audio energy of
      // what it renders.
      const pc = s.connection;
      if (pc && typeof Audio !== "undefined") {
        const audio = new Audio();
        audio.srcObject = new MediaStream(pc.getReceivers().map((r) => r.track));
        // Refused without `--autoplay-policy=no-user-gesture-required` (the
        // signalling-only page): nothing to hear there anyway.
        audio.play().catch(() => {});
      }
      emit("accepted");
    });
    s.on("confirmed", () => emit("confirmed"));
    s.on("ended", (e) => emit("ended", { by: e.originator, cause: e.cause }));
    s.on("failed", (e) => emit("failed", { by: e.originator, status: e.message?.status_code ?? 0, cause: e.cause }));
    s.on("hold", (e) => emit("hold", { by: e.originator }));
    s.on("unhold", (e) => emit("unhold", { by: e.originator }));
  };
  ua.start();
  return {
    register: () => ua.register(),
    unregister: () => ua.unregister(),
    call: (c) => {
      session = ua.call(`sip:${c.target}@${domain}`, { ...env.media, pcConfig: {} });
      watch(session);
    },
    answer: () => session.answer({ ...env.media }),
    reject: (c) => session.terminate({ status_code: c.status ?? 486 }),
    hangup: () => session.terminate(),
    // Re-INVITEs within the call (a=sendonly, then back to sendrecv); "held" and
    // "resumed" when the re-INVITE has its 2xx (JsSIP refuses a new one before that).
    hold: () => session.hold({}, () => emit("held")) || emit("error", { message: "hold refused" }),
    unhold: () => session.unhold({}, () => emit("resumed")) || emit("error", { message: "unhold refused" }),
    // What the call's media did so far (RTCPeerConnection.getStats): audio received
    // (packets, energy), sent, and the DTLS state of the transport.
    stats: async () => {
      const pc = session?.connection;
      if (!pc) return emit("stats", { none: true });
      const out = { packetsReceived: 0, totalAudioEnergy: 0, packetsSent: 0, dtlsState: null, iceState: pc.iceConnectionState };
      (await pc.getStats()).forEach((r) => {
        if (r.type === "inbound-rtp" && r.kind === "audio") {
          out.packetsReceived += r.packetsReceived ?? 0;
          out.totalAudioEnergy += r.totalAudioEnergy ?? 0;
        }
        if (r.type === "outbound-rtp" && r.kind === "audio") out.packetsSent += r.packetsSent ?? 0;
        if (r.type === "transport") out.dtlsState = r.dtlsState ?? out.dtlsState;
      });
      emit("stats", out);
    },
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

export async function sipjsAgent(env) {
  const { SIP, emit, url, user, domain } = env;
  const { UserAgent, Registerer, Inviter, Messager, SessionState, RegistererState } = SIP;
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
    ...(env.sdhFactory ? { sessionDescriptionHandlerFactory: env.sdhFactory } : {}),
    logLevel: "error",
    ...(env.instance ? { instanceId: env.instance, instanceIdAlwaysAdded: true } : {}),
    ...(env.password ? { authorizationUsername: user, authorizationPassword: env.password } : {}),
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

// Runs one command line on `agent`; errors become "error" events. Returns whether it
// was `quit`.
export async function dispatch(agent, line, emit) {
  let c;
  try {
    c = JSON.parse(line);
  } catch {
    emit("error", { message: `bad command: ${line}` });
    return false;
  }
  try {
    const f = agent[c.cmd];
    if (!f) {
      emit("error", { message: `unknown command ${c.cmd}` });
      return false;
    }
    await f(c);
  } catch (e) {
    emit("error", { message: String((e && e.stack) || e) });
  }
  return c.cmd === "quit";
}
