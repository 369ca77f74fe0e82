// Injected by vchat-browser-bench into each page before the web client runs:
// a camera that stamps each frame with a barcode, a reader that finds the
// barcode in the mosaic shown, and byte counters for the page's WebSocket and
// peer connections. Results in window.vchatBench.
//
// The camera is a canvas painted 30 times a second (a webcam's rate; the page
// sends at its own `fps`): a still, textured room (smooth colour waves with a
// sensor's grain, as detailed as a webcam's picture of a room, so that JPEG
// frames are of a webcam's size; the grain changes from frame to frame, as a
// sensor's does, cycling through 4 patterns, so a video codec cannot keep one
// picture of the room forever), Chromium's moving fake camera in the middle half,
// and a band at the top holding the user's number (bench_user, 0-15) and a 16-bit frame number:
// 20 blocks of W/20 pixels, each bit once as is and once inverted below it, so
// a band mangled by JPEG or scaling reads as nothing rather than as a wrong
// number. Round trip: from painting a frame to drawing the first mosaic whose
// tile carries it (the canvas the WebSocket page draws into, or any <video>
// other than the page's own camera, read at each of its frames).
// Picture quality: the PSNR of the user's own tile as shown against the still
// room painted, over the still part (under the band, beside and above the
// moving middle, above the name drawn at the bottom), every 4th tile seen:
// what the codecs of the whole path (the page's, the server's and back) left
// of the picture, the same measure for every transport. The room's grain
// (+-20 a channel, pixel by pixel) alone is 26.9 dB: a path that drops all of
// it and keeps the rest gets about that. So the PSNR of 4x4-pixel means is
// taken too, the picture's shapes and colours without the grain. Those means
// still hold the grain's own 4x4 means (+-3 a channel, 38.7 dB alone), which
// no codec that drops or reuses grain can match; so the 4x4 means are also
// taken against the room painted without grain (`psnr4Clean`), and the mean
// signed error of each channel (R, G, B) of the still part (`bias`), which a
// conversion's matrix, range or rounding shifts.
'use strict';
(() => {
  const params = new URLSearchParams(location.search);
  const W = Math.round(Number(params.get('w')) || 320);
  const H = Math.round(Number(params.get('h')) || 240);
  const ME = Number(params.get('bench_user')) & 15;
  const CAMERA_FPS = 30;
  const BITS = 20;
  const painted = new Map();
  const bench = {
    painted: 0, mosaics: 0, rtts: [], psnr: [], psnr4: [], psnr4Clean: [], bias: [], unreadable: 0, bytesSent: 0, bytesReceived: 0,
    peers: [],
    // Bytes sent and received by the page: its WebSocket messages, and the
    // transport of each peer connection.
    async bytes() {
      let sent = bench.bytesSent;
      let received = bench.bytesReceived;
      for (const pc of bench.peers) {
        try {
          const stats = await pc.getStats();
          stats.forEach((r) => {
            if (r.type === 'transport') {
              sent += r.bytesSent || 0;
              received += r.bytesReceived || 0;
            }
          });
        } catch (_) { /* closed */ }
      }
      return { sent, received };
    },
    // What the page's video encoder does (peer connections): the size it
    // sends, its target bitrate and what limits its quality.
    async encoder() {
      for (const pc of bench.peers) {
        try {
          const stats = await pc.getStats();
          let out = null;
          stats.forEach((r) => {
            if (r.type === 'outbound-rtp' && r.kind === 'video') {
              out = {
                frameWidth: r.frameWidth, frameHeight: r.frameHeight, targetBitrate: r.targetBitrate,
                qualityLimitationReason: r.qualityLimitationReason, encoderImplementation: r.encoderImplementation,
              };
            }
          });
          if (out) return out;
        } catch (_) { /* closed */ }
      }
      return null;
    },
  };
  window.vchatBench = bench;

  const block = W / BITS;
  function stamp(ctx, id) {
    const value = (ME << 16) | (id & 0xffff);
    for (let b = 0; b < BITS; b++) {
      const one = (value >> (BITS - 1 - b)) & 1;
      ctx.fillStyle = one ? '#fff' : '#000';
      ctx.fillRect(b * block, 0, block, block);
      ctx.fillStyle = one ? '#000' : '#fff';
      ctx.fillRect(b * block, block, block, block);
    }
  }

  // The stamp of the tile whose band is in `data` (RGBA rows of width `w`,
  // 2 * block rows), or -1.
  function read(data, w) {
    const scale = w / W;
    let value = 0;
    for (let b = 0; b < BITS; b++) {
      const x = Math.floor((b + 0.5) * block * scale);
      const luma = (y) => {
        const i = (Math.floor(y * scale) * w + x) * 4;
        return (data[i] + data[i + 1] + data[i + 2]) / 3;
      };
      const top = luma(block / 2) > 128;
      const below = luma(block * 1.5) > 128;
      if (top === below) return -1;
      value = (value << 1) | (top ? 1 : 0);
    }
    return value;
  }

  // The still room's grain patterns as painted (RGBA, W x H), once the camera
  // is made; frame `id` shows pattern `id % GRAINS`. `cleanPixels`: the room
  // without grain.
  const GRAINS = 4;
  let stillPixels = null;
  let cleanPixels = null;
  let ownTiles = 0;

  // PSNR (dB) of the tile at `top` of `ctx` (unscaled), frame `id`, against
  // the still room painted: [pixel by pixel, of 4x4 means, of 4x4 means
  // against the room without grain, [mean error of R, G, B]].
  function quality(ctx, top, id) {
    const got = ctx.getImageData(0, top, W, H).data;
    const want = stillPixels[id % GRAINS];
    const clean = cleanPixels;
    const still = (x, y) => y < (3 * H) / 4 && !(y >= H / 4 && x >= W / 4 && x < (3 * W) / 4);
    const db = (se, n) => 10 * Math.log10((255 * 255) / Math.max(se / n, 1e-6));
    let se = 0;
    let n = 0;
    let se4 = 0;
    let n4 = 0;
    let seClean = 0;
    const bias = [0, 0, 0];
    for (let by = Math.ceil((2 * block + 2) / 4) * 4; by + 4 <= H; by += 4) {
      for (let bx = 0; bx + 4 <= W; bx += 4) {
        if (!still(bx, by) || !still(bx + 3, by + 3) || !still(bx, by + 3) || !still(bx + 3, by)) continue;
        const sum = [0, 0, 0];
        const sumClean = [0, 0, 0];
        for (let y = by; y < by + 4; y++) {
          for (let x = bx; x < bx + 4; x++) {
            const i = (y * W + x) * 4;
            for (let c = 0; c < 3; c++) {
              const d = got[i + c] - want[i + c];
              se += d * d;
              sum[c] += d;
              sumClean[c] += got[i + c] - clean[i + c];
            }
            n += 3;
          }
        }
        for (let c = 0; c < 3; c++) {
          se4 += (sum[c] / 16) ** 2;
          seClean += (sumClean[c] / 16) ** 2;
          bias[c] += sum[c] / 16;
        }
        n4 += 3;
      }
    }
    return [db(se, n), db(se4, n4), db(seClean, n4), bias.map((b) => (3 * b) / n4)];
  }

  // Reads every tile's band of the mosaic just drawn on `ctx` (a vertical
  // mosaic: tiles of the frames' width, one under the other).
  function shown(ctx, w, h) {
    const now = performance.now();
    bench.mosaics += 1;
    const tileH = Math.round(H * (w / W));
    const band = Math.ceil(2 * block * (w / W));
    for (let top = 0; top + band <= h; top += tileH) {
      const value = read(ctx.getImageData(0, top, w, band).data, w);
      if (value < 0) {
        bench.unreadable += 1;
        continue;
      }
      if ((value >> 16) !== ME) continue;
      ownTiles += 1;
      if (stillPixels && w === W && top + H <= h && ownTiles % 4 === 0) {
        const [pixels, means, meansClean, bias] = quality(ctx, top, value & 0xffff);
        bench.psnr.push(pixels);
        bench.psnr4.push(means);
        bench.psnr4Clean.push(meansClean);
        bench.bias.push(bias);
      }
      const at = painted.get(value & 0xffff);
      if (at !== undefined) {
        bench.rtts.push(now - at);
        painted.delete(value & 0xffff);
      }
    }
  }

  // The still room: smooth colour waves and grain pattern `k` (none when
  // `grainless`), the same for every user.
  function room(k, grainless) {
    const c = Object.assign(document.createElement('canvas'), { width: W, height: H });
    const cx = c.getContext('2d');
    const img = cx.createImageData(W, H);
    let seed = (0x9e3779b9 + k * 0x632be5ab) >>> 0;
    const grain = () => {
      seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
      return grainless ? 0 : ((seed >>> 0) % 41) - 20;
    };
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const i = (y * W + x) * 4;
        img.data[i] = 120 + 60 * Math.sin(x / 17 + y / 31) + grain();
        img.data[i + 1] = 110 + 50 * Math.sin(x / 23 - y / 13) + grain();
        img.data[i + 2] = 100 + 40 * Math.cos((x + y) / 19) + grain();
        img.data[i + 3] = 255;
      }
    }
    cx.putImageData(img, 0, 0);
    return c;
  }

  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async () => {
    const real = await gum({ video: { width: W / 2, height: H / 2 }, audio: false });
    const stills = Array.from({ length: GRAINS }, (_, k) => room(k));
    stillPixels = stills.map((c) => c.getContext('2d').getImageData(0, 0, W, H).data);
    cleanPixels = room(0, true).getContext('2d').getImageData(0, 0, W, H).data;
    const video = document.createElement('video');
    video.muted = true;
    video.srcObject = real;
    await video.play();
    const canvas = Object.assign(document.createElement('canvas'), { width: W, height: H });
    const ctx = canvas.getContext('2d');
    const stream = canvas.captureStream(0);
    const track = stream.getVideoTracks()[0];
    let id = 0;
    const timer = setInterval(() => {
      id = (id + 1) & 0xffff;
      ctx.drawImage(stills[id % GRAINS], 0, 0);
      ctx.drawImage(video, W / 4, H / 4, W / 2, H / 2);
      stamp(ctx, id);
      painted.set(id, performance.now());
      // Frames never shown (dropped by the page's frame rate) are forgotten.
      if (painted.size > 1000) painted.delete(painted.keys().next().value);
      bench.painted += 1;
      track.requestFrame();
    }, 1000 / CAMERA_FPS);
    track.addEventListener('ended', () => clearInterval(timer));
    const stop = track.stop.bind(track);
    track.stop = () => {
      clearInterval(timer);
      real.getTracks().forEach((t) => t.stop());
      stop();
    };
    return stream;
  };

  // The WebSocket page draws each mosaic into canvas#mosaic.
  const drawImage = CanvasRenderingContext2D.prototype.drawImage;
  CanvasRenderingContext2D.prototype.drawImage = function (...args) {
    const r = drawImage.apply(this, args);
    if (this.canvas.id === 'mosaic') shown(this, this.canvas.width, this.canvas.height);
    return r;
  };

  // A page that plays the mosaic in a <video>: read it at each of its frames.
  const watched = new WeakSet();
  const reader = document.createElement('canvas');
  const readerCtx = reader.getContext('2d', { willReadFrequently: true });
  function watch(video) {
    if (watched.has(video) || video.id === 'self' || !video.requestVideoFrameCallback) return;
    watched.add(video);
    const onFrame = () => {
      const w = video.videoWidth;
      const h = video.videoHeight;
      if (w && h) {
        if (reader.width !== w || reader.height !== h) Object.assign(reader, { width: w, height: h });
        drawImage.call(readerCtx, video, 0, 0);
        shown(readerCtx, w, h);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }
  new MutationObserver(() => document.querySelectorAll('video').forEach(watch))
    .observe(document, { childList: true, subtree: true });

  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        bench.bytesReceived += typeof e.data === 'string' ? new Blob([e.data]).size : e.data.byteLength;
      });
    }

    send(data) {
      bench.bytesSent += typeof data === 'string' ? new Blob([data]).size : (data.byteLength ?? data.size);
      return super.send(data);
    }
  };

  if (window.RTCPeerConnection) {
    const PC = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends PC {
      constructor(...args) {
        super(...args);
        bench.peers.push(this);
      }
    };
  }
})();
