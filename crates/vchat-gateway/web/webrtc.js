// vchat web client, WebRTC transport: the camera goes to the gateway as H.264
// on a peer connection and the room's mosaic comes back on the same one.
// Signalling is WHIP-style: POST the offer to /whip, the answer comes back with
// a Location to DELETE on leaving. The browser encodes and paces the camera
// itself, so a tab in the background keeps sending at the camera's rate.
//
// URL parameter `transport`: `ws` never uses WebRTC, `webrtc` never falls back
// to the WebSocket. Used by app.js through window.vchatRtc.
'use strict';
(() => {
  const params = new URLSearchParams(location.search);
  const forced = params.get('transport');
  const CONNECT_MS = 15000;
  const GATHER_MS = 2000;

  let pc = null;
  let resource = null;
  let failed = false;
  let statsTimer = null;
  let video = null;
  let ctx = null;

  const showTransport = (name) => {
    const el = document.getElementById('transport');
    if (el) el.textContent = name;
    if (window.vchat) window.vchat.transport = name;
  };

  // The receiving <video>, shown where the WebSocket's mosaic canvas is.
  function mosaicVideo() {
    if (video) return video;
    const canvas = document.getElementById('mosaic');
    video = document.createElement('video');
    video.id = 'mosaic-video';
    video.autoplay = true;
    video.muted = true;
    video.playsInline = true;
    video.style.maxWidth = '100%';
    video.style.background = '#000';
    canvas.parentNode.insertBefore(video, canvas);
    return video;
  }

  function showVideo(on) {
    const canvas = document.getElementById('mosaic');
    if (video) video.style.display = on ? '' : 'none';
    if (canvas) canvas.style.display = on ? 'none' : '';
  }

  // H.264 first (packetization-mode 1, constrained baseline first): the only
  // codec the gateway decodes.
  function preferH264(transceiver) {
    const caps = (RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities('video')) || { codecs: [] };
    const h264 = caps.codecs.filter((c) => /h264/i.test(c.mimeType));
    if (!h264.length) throw new Error('this browser cannot send H.264 video');
    const rank = (c) => {
      const f = c.sdpFmtpLine || '';
      return (f.includes('packetization-mode=1') ? 0 : 2) + (f.includes('profile-level-id=42e01f') ? 0 : 1);
    };
    h264.sort((a, b) => rank(a) - rank(b));
    const rest = caps.codecs.filter((c) => /rtx|red|ulpfec/i.test(c.mimeType));
    if (transceiver.setCodecPreferences) transceiver.setCodecPreferences(h264.concat(rest));
  }

  const waitFor = (what, ms, test, target, event) => new Promise((resolve, reject) => {
    if (test()) { resolve(); return; }
    const timer = setTimeout(() => { target.removeEventListener(event, check); reject(new Error(`${what} timed out`)); }, ms);
    function check() {
      let done;
      try { done = test(); } catch (e) { clearTimeout(timer); target.removeEventListener(event, check); reject(e); return; }
      if (done) { clearTimeout(timer); target.removeEventListener(event, check); resolve(); }
    }
    target.addEventListener(event, check);
  });

  async function start(c) {
    const vchat = window.vchat;
    const track = c.camera.getVideoTracks()[0];
    if (!track) throw new Error('no camera track');
    const conn = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
    pc = conn;
    const transceiver = conn.addTransceiver(track, { direction: 'sendrecv' });
    preferH264(transceiver);
    try {
      const p = transceiver.sender.getParameters();
      if (p.encodings && p.encodings[0]) {
        p.encodings[0].maxFramerate = c.fps;
        await transceiver.sender.setParameters(p);
      }
    } catch (_) { /* the camera's own rate then */ }
    const v = mosaicVideo();
    conn.ontrack = (e) => {
      v.srcObject = e.streams[0] || new MediaStream([e.track]);
      v.play().catch(() => {});
    };
    await conn.setLocalDescription(await conn.createOffer());
    await waitFor('ICE gathering', GATHER_MS, () => conn.iceGatheringState === 'complete', conn, 'icegatheringstatechange')
      .catch(() => {});
    const q = new URLSearchParams();
    if (vchat.user) q.set('user', vchat.user);
    if (vchat.room) q.set('room', vchat.room);
    if (c.token) q.set('access_token', c.token);
    const res = await fetch(`/whip?${q}`, {
      method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: conn.localDescription.sdp,
    });
    const body = await res.text();
    if (res.status !== 201) {
      const err = new Error(`${res.status}: ${body.trim()}`);
      err.status = res.status;
      throw err;
    }
    resource = res.headers.get('Location');
    vchat.rtc = { location: resource };
    await conn.setRemoteDescription({ type: 'answer', sdp: body });
    await waitFor('WebRTC connection', CONNECT_MS, () => {
      if (conn.connectionState === 'failed' || conn.connectionState === 'closed') {
        throw new Error(`connection ${conn.connectionState}`);
      }
      return conn.connectionState === 'connected';
    }, conn, 'connectionstatechange');
    return conn;
  }

  // Frames sent and mosaics received, from the connection's statistics.
  async function poll(conn) {
    const vchat = window.vchat;
    let stats;
    try { stats = await conn.getStats(); } catch (_) { return; }
    const now = performance.now();
    stats.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        vchat.sent = s.framesSent || s.framesEncoded || 0;
        vchat.bytesSent = s.bytesSent || 0;
      }
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        const decoded = s.framesDecoded || 0;
        const last = poll.last;
        if (last) vchat.fps = (1000 * (decoded - last.n)) / Math.max(1, now - last.t);
        poll.last = { n: decoded, t: now };
        vchat.frames = decoded;
        vchat.bytesReceived = s.bytesReceived || 0;
        if (video && video.videoWidth) {
          vchat.lastMosaic = { width: video.videoWidth, height: video.videoHeight };
        }
      }
      if (s.type === 'candidate-pair' && s.state === 'succeeded' && s.currentRoundTripTime != null) {
        vchat.latencyMs = s.currentRoundTripTime * 1000;
      }
    });
  }

  function close(reason) {
    clearInterval(statsTimer);
    statsTimer = null;
    if (resource) {
      // keepalive: the request outlives a closing tab.
      fetch(resource, { method: 'DELETE', keepalive: true }).catch(() => {});
      resource = null;
    }
    if (pc) {
      pc.onconnectionstatechange = null;
      pc.close();
      pc = null;
    }
    poll.last = null;
    showVideo(false);
    if (window.vchat && reason) window.vchat.closes.push({ code: 'webrtc', reason });
  }

  window.vchatRtc = {
    // Whether connect() should try WebRTC now.
    wanted() {
      return forced !== 'ws' && !failed && typeof RTCPeerConnection === 'function';
    },
    // Connects over WebRTC: c = {camera, token, fps, isJoined, setState, say,
    // fail, fallback}. On failure, falls back to the WebSocket unless WebRTC
    // is forced.
    async connect(c) {
      ctx = c;
      close();
      c.setState('connecting');
      let conn;
      try {
        conn = await start(c);
      } catch (e) {
        close();
        if (!c.isJoined()) return;
        if (forced === 'webrtc') {
          c.fail('webrtc', 'WebRTCFailed', `WebRTC failed: ${e.message}`);
          return;
        }
        failed = true;
        window.vchat.webrtcError = e.message;
        c.say(`WebRTC is not available (${e.message}); streaming over the WebSocket instead.`);
        c.fallback();
        return;
      }
      if (!c.isJoined()) { close(); return; }
      showTransport('webrtc');
      showVideo(true);
      c.setState('streaming');
      statsTimer = setInterval(() => poll(conn), 500);
      conn.onconnectionstatechange = () => {
        if (conn !== pc || !['failed', 'closed', 'disconnected'].includes(conn.connectionState)) return;
        if (conn.connectionState === 'disconnected') return; // may recover by itself
        close(`connection ${conn.connectionState}`);
        if (ctx && ctx.isJoined()) {
          ctx.say('Lost the WebRTC connection; reconnecting.', true);
          ctx.setState('reconnecting');
          setTimeout(() => { if (ctx.isJoined()) window.vchatRtc.connect(ctx); }, 1000);
        }
      };
    },
    close,
    showTransport,
    // Share of the received mosaic's pixels within `tol` of the colour
    // [r, g, b] (for tests and for checking a connection by eye).
    colourShare(rgb, tol) {
      if (!video || !video.videoWidth) return null;
      const w = video.videoWidth;
      const h = video.videoHeight;
      const canvas = document.createElement('canvas');
      canvas.width = w;
      canvas.height = h;
      const g = canvas.getContext('2d', { willReadFrequently: true });
      g.drawImage(video, 0, 0);
      const px = g.getImageData(0, 0, w, h).data;
      let n = 0;
      for (let i = 0; i < px.length; i += 4) {
        if (Math.abs(px[i] - rgb[0]) <= tol && Math.abs(px[i + 1] - rgb[1]) <= tol && Math.abs(px[i + 2] - rgb[2]) <= tol) n += 1;
      }
      return n / (w * h);
    },
  };
})();
