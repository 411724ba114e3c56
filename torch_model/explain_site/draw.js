// Canvas drawing: colour maps, a (C, H, W) array as a grid of channel maps (a montage), click -> (c, y, x).

// Sequential (values >= 0): black -> purple -> orange -> light yellow (magma-like stops).
const SEQ = [[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]];
// Diverging (signed): blue -> white -> red.
const DIV = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];

function ramp(stops, t) {
  t = Math.min(1, Math.max(0, t));
  const f = t * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(f));
  const u = f - i;
  const a = stops[i], b = stops[i + 1];
  return [a[0] + (b[0] - a[0]) * u, a[1] + (b[1] - a[1]) * u, a[2] + (b[2] - a[2]) * u];
}

// value -> [r, g, b] for a range {lo, hi}; signed ranges (lo < 0) use the diverging map centred on 0.
export function colour(v, range) {
  if (range.lo < 0) {
    const m = Math.max(-range.lo, range.hi) || 1;
    return ramp(DIV, 0.5 + 0.5 * v / m);
  }
  const span = range.hi - range.lo || 1;
  return ramp(SEQ, (v - range.lo) / span);
}

export function rangeOf(data) {
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return { lo: Math.min(lo, 0), hi: Math.max(hi, 0) };
}

export function mergeRanges(ranges) {
  return { lo: Math.min(...ranges.map((r) => r.lo)), hi: Math.max(...ranges.map((r) => r.hi)) };
}

// Draw a (C, H, W) tensor as a grid of C maps, 1-pixel gaps, each pixel `zoom` canvas pixels.
// scale: "local" (each channel its own range), or a {lo, hi} range for all channels.
// Returns the layout, for hit testing and highlighting.
export function montage(canvas, t, scale, opts = {}) {
  const [C, H, W] = t.shape.length === 3 ? t.shape : [1, 1, t.shape[0]];
  const cols = opts.cols || Math.min(C, Math.max(1, Math.round(Math.sqrt(C * H / W * 1.6))));
  const rows = Math.ceil(C / cols);
  const maxWidth = opts.maxWidth || 660;
  const zoom = opts.zoom || Math.max(1, Math.floor(maxWidth / (cols * (W + 1))));
  const cw = W * zoom + 1, ch = H * zoom + 1;
  canvas.width = cols * cw + 1;
  canvas.height = rows * ch + 1;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(canvas.width, canvas.height);
  img.data.fill(255);
  for (let c = 0; c < C; c++) {
    const plane = t.data.subarray(c * H * W, (c + 1) * H * W);
    const range = scale === "local" ? rangeOf(plane) : scale;
    const ox = (c % cols) * cw + 1, oy = Math.floor(c / cols) * ch + 1;
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const [r, g, b] = colour(plane[y * W + x], range);
        for (let dy = 0; dy < zoom; dy++)
          for (let dx = 0; dx < zoom; dx++) {
            const p = ((oy + y * zoom + dy) * canvas.width + ox + x * zoom + dx) * 4;
            img.data[p] = r; img.data[p + 1] = g; img.data[p + 2] = b; img.data[p + 3] = 255;
          }
      }
  }
  ctx.putImageData(img, 0, 0);
  const layout = { C, H, W, cols, zoom, cw, ch };
  canvas.layout = layout;
  return layout;
}

// canvas pixel -> {c, y, x} or null
export function hit(canvas, event) {
  const L = canvas.layout;
  if (!L) return null;
  const rect = canvas.getBoundingClientRect();
  const px = (event.clientX - rect.left) * canvas.width / rect.width;
  const py = (event.clientY - rect.top) * canvas.height / rect.height;
  const col = Math.floor(px / L.cw), row = Math.floor(py / L.ch);
  const c = row * L.cols + col;
  const x = Math.floor((px - col * L.cw - 1) / L.zoom), y = Math.floor((py - row * L.ch - 1) / L.zoom);
  if (c < 0 || c >= L.C || x < 0 || y < 0 || x >= L.W || y >= L.H) return null;
  return { c, y, x };
}

// Outline the units [y0..y1] x [x0..x1] of channel c (clamped) on a montage.
export function outline(canvas, c, y0, y1, x0, x1, colourCss = "#00e5ff") {
  const L = canvas.layout;
  const ctx = canvas.getContext("2d");
  const ox = (c % L.cols) * L.cw + 1, oy = Math.floor(c / L.cols) * L.ch + 1;
  y0 = Math.max(0, y0); x0 = Math.max(0, x0); y1 = Math.min(L.H - 1, y1); x1 = Math.min(L.W - 1, x1);
  ctx.strokeStyle = colourCss;
  ctx.lineWidth = Math.max(1, Math.min(2, L.zoom));
  ctx.strokeRect(ox + x0 * L.zoom - 0.5, oy + y0 * L.zoom - 0.5, (x1 - x0 + 1) * L.zoom + 1, (y1 - y0 + 1) * L.zoom + 1);
}

// A single plane (H, W) into a canvas of its own size (CSS scales it), grey or with a range.
export function plane(canvas, data, H, W, range) {
  canvas.width = W;
  canvas.height = H;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(W, H);
  const r0 = range || rangeOf(data);
  for (let i = 0; i < H * W; i++) {
    const [r, g, b] = range === "grey" ? [data[i], data[i], data[i]] : colour(data[i], r0);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const child of children) if (child != null) e.append(child);
  return e;
}
