// The try-it softphone: who is logged in comes from the login plugin
// (`/login/session`); SIP goes over this server's `/ws`, where the host holds the
// connection to that user; calls use the browser's WebRTC (audio only).
'use strict';

(async () => {
  const $ = (id) => document.getElementById(id);
  const status = (text, ok) => {
    $('status').textContent = text;
    $('status').className = ok === undefined ? '' : ok ? 'ok' : 'bad';
  };
  // What a test (or a curious visitor, in the console) can read.
  const state = { user: null, registered: false, call: 'none', messages: [] };
  window.softphone = { state };

  let who;
  try {
    const r = await fetch('/login/session', { credentials: 'same-origin', cache: 'no-store' });
    if (r.status === 401) {
      location.href = '/login?next=' + encodeURIComponent(location.pathname);
      return;
    }
    if (!r.ok) throw new Error(`the login plugin answered ${r.status}`);
    who = await r.json();
  } catch (e) {
    status(`cannot tell who is logged in: ${e.message}`, false);
    return;
  }
  state.user = who.user;
  $('me').textContent = `${who.user}@${who.domain}`;

  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ua = new JsSIP.UA({
    sockets: [new JsSIP.WebSocketInterface(`${scheme}://${location.host}/ws`)],
    uri: `sip:${who.user}@${who.domain}`,
    register: true,
    session_timers: false,
    user_agent: 'sipwasm softphone (JsSIP)',
  });

  const addMessage = (from, text, failed) => {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'from';
    name.textContent = `${from}: `;
    li.append(name, document.createTextNode(text));
    if (failed) li.className = 'failed';
    $('messages').append(li);
    li.scrollIntoView({ block: 'nearest' });
    state.messages.push({ from, text, failed: Boolean(failed) });
  };

  ua.on('connected', () => status('connected'));
  ua.on('disconnected', () => {
    state.registered = false;
    status('disconnected (retrying)', false);
  });
  ua.on('registered', () => {
    state.registered = true;
    status('registered', true);
  });
  ua.on('unregistered', () => {
    state.registered = false;
    status('not registered', false);
  });
  ua.on('registrationFailed', (e) => {
    state.registered = false;
    status(`registration failed: ${e.cause}`, false);
  });
  ua.on('newMessage', (e) => {
    if (e.originator !== 'remote') return;
    addMessage(e.request.from.uri.user, e.request.body ?? '');
  });

  let current = null;
  const setCall = (text, phase) => {
    $('call-state').textContent = text;
    state.call = phase;
    $('hangup').disabled = phase === 'none';
    $('call').disabled = phase !== 'none';
    $('answer').hidden = phase !== 'ringing';
  };
  const track = (session, peer) => {
    current = session;
    session.on('peerconnection', (e) => {
      e.peerconnection.addEventListener('track', (ev) => {
        $('remote').srcObject = ev.streams[0];
      });
    });
    session.on('progress', () => {
      if (session.direction === 'outgoing') setCall(`Ringing ${peer}…`, 'calling');
    });
    session.on('confirmed', () => {
      // A track that arrived before the listener above: play what is received.
      const pc = session.connection;
      if (pc && !$('remote').srcObject) {
        const tracks = pc.getReceivers().map((r) => r.track).filter(Boolean);
        if (tracks.length) $('remote').srcObject = new MediaStream(tracks);
      }
      setCall(`In a call with ${peer}.`, 'talking');
    });
    const done = (e) => {
      current = null;
      setCall(e && e.cause && e.cause !== 'Terminated' ? `Call ended: ${e.cause}.` : 'No call.', 'none');
    };
    session.on('ended', done);
    session.on('failed', done);
    if (session.direction === 'incoming') {
      // A session created for an incoming call already has its peer connection.
      session.connection?.addEventListener('track', (ev) => {
        $('remote').srcObject = ev.streams[0];
      });
    }
  };
  const media = { mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } };

  ua.on('newRTCSession', (e) => {
    const session = e.session;
    if (e.originator === 'remote') {
      if (current) {
        session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
        return;
      }
      const from = e.request.from.uri.user;
      track(session, from);
      setCall(`${from} is calling.`, 'ringing');
    }
  });

  $('call-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const target = $('target').value.trim();
    if (!target || current) return;
    setCall(`Calling ${target}…`, 'calling');
    try {
      track(ua.call(`sip:${target}@${who.domain}`, media), target);
    } catch (e) {
      setCall(`Cannot call: ${e.message}`, 'none');
    }
  });
  $('answer').addEventListener('click', () => {
    if (current && state.call === 'ringing') current.answer(media);
  });
  $('hangup').addEventListener('click', () => {
    if (current) current.terminate();
  });
  $('message-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const target = $('target').value.trim();
    const text = $('text').value;
    if (!target) {
      $('target').focus();
      return;
    }
    ua.sendMessage(`sip:${target}@${who.domain}`, text, {
      eventHandlers: {
        succeeded: () => addMessage(`me → ${target}`, text),
        failed: (e) => addMessage(`me → ${target}`, `${text} (not delivered: ${e.cause})`, true),
      },
    });
    $('text').value = '';
  });

  // Audio received in the current call: packets and energy (RTCPeerConnection stats).
  window.softphone.audioIn = async () => {
    const pc = current?.connection;
    if (!pc) return null;
    let out = null;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out = { packets: s.packetsReceived ?? 0, energy: s.totalAudioEnergy ?? 0 };
      }
    });
    return out;
  };

  ua.start();
})();
