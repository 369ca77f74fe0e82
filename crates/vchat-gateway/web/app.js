// vchat web client: camera frames as JPEG over a WebSocket, mosaics back.
//
// Wire format (see the gateway's `web` module): each binary message sent is one
// JPEG frame; every frame gets exactly one reply, in order: a `mosaic` status
// (JSON text) followed by the mosaic JPEG (binary), or an `ack`, `skipped`,
// `rate_limited` or `error` status. At most MAX_IN_FLIGHT frames await their
// reply, so a slow network or server never builds a backlog.
//
// URL parameters: user, room, autojoin=1, fps (frames per second sent, capped by
// the server), w and h (size of the frames sent), quality (JPEG, 0.1 to 1),
// transport (ws: WebSocket only; webrtc: WebRTC only; default WebRTC, falling
// back to the WebSocket; see webrtc.js).
// State for tests and for the curious: window.vchat.
'use strict';
(() => {
  const params = new URLSearchParams(location.search);
  // An access token for a gateway with access control: sent as the
  // WebSocket's `access_token`.
  const token = params.get('token') || '';
  // The close code of a connection replaced by a newer one of the same user.
  const CLOSE_REPLACED = 4000;
  const num = (name, dflt, lo, hi) => {
    const v = Number(params.get(name));
    return params.has(name) && Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : dflt;
  };
  const WIDTH = Math.round(num('w', 320, 16, 1920));
  const HEIGHT = Math.round(num('h', 240, 16, 1080));
  const QUALITY = num('quality', 0.7, 0.1, 1);
  const WANTED_FPS = num('fps', 15, 0.2, 60);
  const MAX_IN_FLIGHT = 2;
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];

  const $ = (id) => document.getElementById(id);
  const ui = {
    user: $('user'), room: $('room'), join: $('join'), leave: $('leave'),
    status: $('status'), message: $('message'), mosaic: $('mosaic'),
    participants: $('participants'), video: $('self'),
  };
  const capture = document.createElement('canvas');
  capture.width = WIDTH;
  capture.height = HEIGHT;
  const captureCtx = capture.getContext('2d');
  const mosaicCtx = ui.mosaic.getContext('2d');

  let ws = null;
  let camera = null;
  let joined = false;
  let attempt = 0;
  let reconnectTimer = null;
  let pumpTimer = null;
  let capturing = false;
  let sendSeq = 0;
  let lastSend = 0;
  let pendingMeta = null;
  let lastJpeg = null;
  let errorTimer = null;
  const sentAt = new Map();
  const recvTimes = [];

  const vchat = {
    state: 'idle', // idle | camera | connecting | streaming | reconnecting | left | error
    user: '', room: '',
    sent: 0, frames: 0, errors: 0, rateLimited: 0, skipped: 0, acks: 0,
    inFlight: 0, fps: 0, latencyMs: null, maxFps: null, reconnects: 0,
    lastMosaic: null, // {width, height, participants, seq, bytes}
    lastError: null, message: '', notices: [], hello: null, closes: [],
    transport: null, // webrtc | websocket
    join, leave,
    // The newest mosaic JPEG, base64, or null.
    lastMosaicBase64() {
      if (!lastJpeg) return null;
      const b = new Uint8Array(lastJpeg);
      let s = '';
      for (let i = 0; i < b.length; i += 0x8000) {
        s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
      }
      return btoa(s);
    },
  };
  window.vchat = vchat;

  function say(text, isError) {
    vchat.message = text || '';
    if (text) {
      vchat.notices.push(text);
      if (vchat.notices.length > 50) vchat.notices.shift();
    }
    ui.message.textContent = vchat.message;
    ui.message.classList.toggle('shown', !!text);
    ui.message.classList.toggle('error', !!isError);
  }

  function showStatus() {
    const lat = vchat.latencyMs == null ? '-' : vchat.latencyMs.toFixed(0) + ' ms';
    const size = vchat.lastMosaic ? `${vchat.lastMosaic.width}x${vchat.lastMosaic.height}` : '-';
    ui.status.textContent = `${vchat.state}  sent ${vchat.sent}  mosaics ${vchat.frames}  ` +
      `fps ${vchat.fps.toFixed(1)}  latency ${lat}  mosaic ${size}  errors ${vchat.errors}` +
      (vchat.rateLimited ? `  rate-limited ${vchat.rateLimited}` : '');
  }
  setInterval(() => {
    const now = performance.now();
    while (recvTimes.length && now - recvTimes[0] > 2000) recvTimes.shift();
    if (vchat.transport !== 'webrtc') vchat.fps = recvTimes.length / 2;
    showStatus();
  }, 500);

  function setState(s) {
    vchat.state = s;
    document.body.classList.toggle('streaming', s === 'streaming');
    ui.join.disabled = joined;
    ui.leave.disabled = !joined;
    ui.user.disabled = ui.room.disabled = joined;
    showStatus();
  }

  async function startCamera() {
    if (camera) return true;
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      fail('camera', 'InsecureContext',
        'This page cannot use a camera: browsers allow cameras only on https:// pages and on ' +
        'localhost. Serve the Flow with TLS (ssl_certfile and ssl_keyfile) and open its https:// address.');
      return false;
    }
    setState('camera');
    try {
      camera = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: WIDTH }, height: { ideal: HEIGHT } }, audio: false,
      });
    } catch (e) {
      const why = {
        NotAllowedError: 'Camera access was denied. Allow the camera for this site (the icon in ' +
          'the address bar), then press Join again.',
        SecurityError: 'Camera access was denied by the browser\'s settings for this site.',
        NotFoundError: 'No camera was found. Plug one in, then press Join again.',
        OverconstrainedError: 'No camera was found that can deliver video.',
        NotReadableError: 'The camera is in use by another program, or it failed to start.',
      }[e.name] || `Cannot start the camera: ${e.name}: ${e.message}`;
      fail('camera', e.name, why);
      return false;
    }
    ui.video.srcObject = camera;
    try { await ui.video.play(); } catch (_) { /* autoplay of a muted stream is allowed */ }
    return true;
  }

  function stopCamera() {
    if (camera) camera.getTracks().forEach((t) => t.stop());
    camera = null;
    ui.video.srcObject = null;
  }

  function fail(kind, name, text) {
    joined = false;
    vchat.lastError = { kind, name, message: text };
    stopCamera();
    say(text, true);
    setState('error');
  }

  async function join(user, room) {
    user = (user ?? ui.user.value).trim();
    room = (room ?? ui.room.value).trim();
    ui.user.value = user;
    ui.room.value = room;
    // With an access token (`?token=`), the name and room are the token's.
    if (!user && !token) {
      say('Pick a name first.', true);
      ui.user.focus();
      return;
    }
    vchat.user = user;
    vchat.room = room;
    joined = true;
    attempt = 0;
    say('');
    if (!(await startCamera())) return;
    if (!joined) return;
    connect();
  }

  function leave(reason) {
    joined = false;
    clearTimeout(reconnectTimer);
    clearTimeout(pumpTimer);
    if (ws) ws.close(1000, reason || 'left');
    ws = null;
    if (window.vchatRtc) window.vchatRtc.close(reason || 'left');
    stopCamera();
    setState('left');
  }

  function connect() {
    clearTimeout(reconnectTimer);
    // WebRTC first when the browser has it (webrtc.js); the WebSocket when
    // it fails or with ?transport=ws.
    if (window.vchatRtc && window.vchatRtc.wanted()) {
      window.vchatRtc.connect({
        camera, token, fps: WANTED_FPS, isJoined: () => joined, setState, say, fail, fallback: connect,
      });
      return;
    }
    if (window.vchatRtc) window.vchatRtc.showTransport('websocket');
    const q = new URLSearchParams();
    if (vchat.user) q.set('user', vchat.user);
    if (vchat.room) q.set('room', vchat.room);
    if (token) q.set('access_token', token);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const sock = new WebSocket(`${scheme}://${location.host}/ws?${q}`);
    sock.binaryType = 'arraybuffer';
    let opened = false;
    ws = sock;
    sendSeq = 0;
    vchat.inFlight = 0;
    sentAt.clear();
    pendingMeta = null;
    setState(attempt ? 'reconnecting' : 'connecting');
    sock.onopen = () => {
      if (ws !== sock) return;
      opened = true;
      attempt = 0;
      say('');
      setState('streaming');
      pump();
    };
    sock.onmessage = (ev) => { if (ws === sock) receive(ev.data); };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      vchat.closes.push({ code: ev.code, reason: ev.reason });
      vchat.inFlight = 0;
      if (!joined) return;
      if (ev.code === CLOSE_REPLACED) {
        // Reconnecting would end the newer connection in turn.
        fail('replaced', 'Replaced', `${ev.reason || 'Replaced by a newer connection'}: this tab stopped.`);
        return;
      }
      const delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)] * (0.8 + 0.4 * Math.random());
      attempt += 1;
      vchat.reconnects += 1;
      const why = ev.code === 1001 ? 'The server is shutting down'
        : !opened ? 'Cannot reach the server'
        : `Lost the server (${ev.code}${ev.reason ? ': ' + ev.reason : ''})`;
      say(`${why}; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${attempt}).`, true);
      setState('reconnecting');
      reconnectTimer = setTimeout(() => { if (joined) connect(); }, delay);
    };
  }

  // One reply settled frame `seq`: one more frame may go.
  function settle(seq) {
    vchat.inFlight = Math.max(0, vchat.inFlight - 1);
    const t = sentAt.get(seq);
    if (t !== undefined) {
      vchat.latencyMs = performance.now() - t;
      sentAt.delete(seq);
    }
    pump();
  }

  function receive(data) {
    if (typeof data !== 'string') {
      const meta = pendingMeta;
      pendingMeta = null;
      if (meta) render(data, meta);
      return;
    }
    let m;
    try { m = JSON.parse(data); } catch (_) { return; }
    switch (m.type) {
      case 'hello':
        vchat.hello = m;
        vchat.maxFps = m.max_fps;
        break;
      case 'mosaic':
        pendingMeta = m;
        settle(m.seq);
        break;
      case 'ack':
        vchat.acks += 1;
        settle(m.seq);
        break;
      case 'skipped':
        vchat.skipped += 1;
        settle(m.seq);
        break;
      case 'rate_limited':
        vchat.rateLimited += 1;
        settle(m.seq);
        break;
      case 'error':
        vchat.errors += 1;
        vchat.lastError = { kind: 'server', name: 'error', message: m.error };
        say(`The server could not use a frame: ${m.error}`, true);
        clearTimeout(errorTimer);
        errorTimer = setTimeout(() => { if (vchat.state === 'streaming') say(''); }, 4000);
        if (m.seq != null) settle(m.seq);
        break;
      default:
        break;
    }
  }

  async function render(buf, meta) {
    let bmp;
    try {
      bmp = await createImageBitmap(new Blob([buf], { type: 'image/jpeg' }));
    } catch (e) {
      vchat.errors += 1;
      vchat.lastError = { kind: 'decode', name: e.name, message: String(e.message) };
      return;
    }
    if (ui.mosaic.width !== bmp.width || ui.mosaic.height !== bmp.height) {
      ui.mosaic.width = bmp.width;
      ui.mosaic.height = bmp.height;
    }
    mosaicCtx.drawImage(bmp, 0, 0);
    bmp.close();
    lastJpeg = buf;
    const participants = Array.isArray(meta.participants) ? meta.participants
      : meta.participants != null ? [String(meta.participants)] : [];
    vchat.frames += 1;
    vchat.lastMosaic = {
      width: ui.mosaic.width, height: ui.mosaic.height, participants,
      seq: meta.seq, bytes: buf.byteLength, serverMs: meta.server_ms,
    };
    recvTimes.push(performance.now());
    ui.participants.textContent = participants.length
      ? `in ${vchat.room || 'the shared room'}, top to bottom: ${participants.join(', ')}`
      : '';
  }

  // Sends the next frame when fewer than MAX_IN_FLIGHT await their reply and
  // the frame rate allows; otherwise comes back when it would.
  function pump() {
    clearTimeout(pumpTimer);
    if (!ws || ws.readyState !== WebSocket.OPEN || !camera || capturing) return;
    if (vchat.inFlight >= MAX_IN_FLIGHT) return;
    const fps = Math.min(WANTED_FPS, vchat.maxFps || WANTED_FPS);
    const wait = lastSend + 1000 / fps - performance.now();
    if (wait > 0) {
      pumpTimer = setTimeout(pump, wait);
      return;
    }
    const v = ui.video;
    if (!v.videoWidth || !v.videoHeight) {
      pumpTimer = setTimeout(pump, 50);
      return;
    }
    // Fill WIDTH x HEIGHT, cropping the camera's picture to that aspect.
    const scale = Math.max(WIDTH / v.videoWidth, HEIGHT / v.videoHeight);
    const sw = WIDTH / scale;
    const sh = HEIGHT / scale;
    captureCtx.drawImage(v, (v.videoWidth - sw) / 2, (v.videoHeight - sh) / 2, sw, sh, 0, 0, WIDTH, HEIGHT);
    capturing = true;
    lastSend = performance.now();
    const sock = ws;
    capture.toBlob(async (blob) => {
      try {
        if (!blob || sock !== ws || sock.readyState !== WebSocket.OPEN) return;
        const buf = await blob.arrayBuffer();
        if (sock !== ws || sock.readyState !== WebSocket.OPEN) return;
        sock.send(buf);
        sendSeq += 1;
        sentAt.set(sendSeq, performance.now());
        vchat.sent += 1;
        vchat.inFlight += 1;
      } finally {
        capturing = false;
        pump();
      }
    }, 'image/jpeg', QUALITY);
  }

  ui.join.addEventListener('click', () => join());
  ui.leave.addEventListener('click', () => leave());
  for (const input of [ui.user, ui.room]) {
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter' && !joined) join(); });
  }
  // Closing the tab ends the stream at once: the others' mosaics drop this user
  // without waiting for the server's idle timeout.
  window.addEventListener('pagehide', () => {
    if (ws) ws.close(1000, 'tab closed');
    if (window.vchatRtc) window.vchatRtc.close('tab closed');
  });

  ui.user.value = params.get('user') || '';
  ui.room.value = params.get('room') || '';
  setState('idle');
  if (params.get('autojoin') === '1' && (ui.user.value.trim() || token)) join();
})();
