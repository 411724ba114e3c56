// View 2: one conv unit's sum, recomputed here from the stored float32 inputs and weights, beside numpy_ref's value.
import { el, plane } from "./draw.js";
import { fmt } from "./data.js";

// The input rows/columns a unit of layer i reads, back through every conv and pool down to the 224x224 input
// (unclamped: padding may reach outside).
export function receptiveField(layers, i, y, x) {
  let [y0, y1, x0, x1] = [y, y, x, x];
  for (let j = i; j >= 0; j--) {
    const l = layers[j];
    if (l.kind !== "Conv2d" && l.kind !== "MaxPool2d") continue;
    y0 = y0 * l.stride - l.padding; y1 = y1 * l.stride - l.padding + l.kernel - 1;
    x0 = x0 * l.stride - l.padding; x1 = x1 * l.stride - l.padding + l.kernel - 1;
  }
  return [y0, y1, x0, x1];
}

// The 28x28 pixels that input rows lo..hi (224 scale) mix: torch's bilinear resize, align_corners=False,
// src = (i + 0.5) * 28 / 224 - 0.5 clamped at 0, reads pixels floor(src) and floor(src) + 1.
export function toPixels(lo, hi) {
  const src = (i) => Math.max(0, (i + 0.5) * 28 / 224 - 0.5);
  lo = Math.max(0, lo); hi = Math.min(223, hi);
  return [Math.floor(src(lo)), Math.min(27, Math.floor(src(hi)) + 1)];
}

// Every product of the unit's sum, in numpy_ref's order (c, kh, kw), from the layer's stored input.
export function convTerms(state, name, f, y, x) {
  const i = state.site.layers.findIndex((l) => l.name === name);
  const layer = state.site.layers[i];
  const input = state.acts[i === 0 ? "x" : state.site.layers[i - 1].name];
  const W = state.weights[`${name}.weight`];
  const [C, H, Wd] = input.shape;
  const k = layer.kernel, s = layer.stride, p = layer.padding;
  const n = C * k * k;
  const xs = new Float64Array(n), ws = new Float64Array(n), ts = new Float64Array(n);
  for (let c = 0; c < C; c++)
    for (let kh = 0; kh < k; kh++)
      for (let kw = 0; kw < k; kw++) {
        const j = (c * k + kh) * k + kw;
        const ih = y * s - p + kh, iw = x * s - p + kw;
        const xin = ih >= 0 && ih < H && iw >= 0 && iw < Wd ? input.at(c, ih, iw) : 0;   // padding reads 0
        const w = W.data[f * n + j];
        xs[j] = xin; ws[j] = w; ts[j] = xin * w;      // exact: a float32 times a float32 fits a float64
      }
  return { i, layer, C, k, s, p, n, xs, ws, ts, bias: state.weights[`${name}.bias`].data[f] };
}

export function convSum(terms) {
  let sum = 0, abs = 0;
  for (let j = 0; j < terms.n; j++) { sum += terms.ts[j]; abs += Math.abs(terms.ts[j]); }
  return { sum, abs, value: sum + terms.bias };
}

export function renderArithmetic(state) {
  const u = state.unit;
  const box = document.getElementById("conv-arithmetic");
  const T = convTerms(state, u.layer, u.c, u.y, u.x);
  const { sum, abs, value } = convSum(T);
  const reference = state.acts[u.layer].at(u.c, u.y, u.x);
  const diff = Math.abs(value - reference);
  const rel = diff / Math.max(Math.abs(reference), 1e-30);
  // float32 rounding: n 2^-24 sum|products| for the sum (a standard bound), 2^-24 (|bias| + |value|) for the bias add
  const bound = 2 ** -24 * (T.n * abs + Math.abs(T.bias) + Math.abs(value));
  box.dataset.value = String(value);
  box.dataset.reference = String(reference);
  box.dataset.layer = u.layer;
  box.replaceChildren();

  // receptive field in the 224x224 input and in the 28x28 image
  const rf = receptiveField(state.site.layers, T.i, u.y, u.x);
  const [py0, py1] = toPixels(rf[0], rf[1]), [px0, px1] = toPixels(rf[2], rf[3]);
  const c224 = el("canvas", { class: "rf" }), c28 = el("canvas", { class: "rf px" });
  const x8 = new Uint8Array(224 * 224);
  for (let i = 0; i < x8.length; i++) x8[i] = Math.round(state.acts.x.data[i] * 255);
  plane(c224, x8, 224, 224, "grey");
  plane(c28, state.arrays.image.data, 28, 28, "grey");
  box_(c224, rf[0], rf[1], rf[2], rf[3], 1);
  box_(c28, py0, py1, px0, px1, 1);

  const head = el("p", { class: "sum" },
    `${u.layer}[f=${u.c}, y=${u.y}, x=${u.x}] = bias + ${T.n} products (${T.C} channels x ${T.k}x${T.k} kernel, stride ${T.s}, padding ${T.p})`);
  const result = el("table", { class: "result" },
    row("sum of the products (this page, float64)", fmt(sum, 9)),
    row("+ bias", fmt(T.bias, 9)),
    row("= this page's value", fmt(value, 9), "value"),
    row("numpy_ref's value (float32, im2col + BLAS)", fmt(reference, 9), "reference"),
    row("numpy_ref's value vs this page's value rounded to float32", stepsNote(state, u, value)),
    row("difference", `${fmt(diff, 3)} (relative ${fmt(rel, 3)}); float32 rounding bound 2^-24 (n sum|products| + |bias| + |value|) = ${fmt(bound, 3)}`),
    row("verdict", rel <= 1e-4 || diff <= bound ? "equal (within float32 rounding)" : "DIFFERENT", "verdict"));

  box.append(head,
    el("div", { class: "row" },
      el("figure", {}, c224, el("figcaption", { text: `receptive field in the 224x224 input: rows ${rf[0]}..${rf[1]}, columns ${rf[2]}..${rf[3]} (outside the image: padding)` })),
      el("figure", {}, c28, el("figcaption", { text: `in the 28x28 image: rows ${py0}..${py1}, columns ${px0}..${px1}` })),
      result),
    channelPartials(T, state),
    el("p", { class: "note", text: "Each product is a float32 input times a float32 weight, exact in float64; "
      + "the page adds them in float64, numpy_ref in float32 (its matmul's own order), so the two agree to "
      + "float32 rounding, not bit for bit. The site stores numpy_ref's value as that count of float32 steps "
      + "(one int8 a unit, instead of 4 bytes): the page sums the whole layer in float64, rounds each sum to "
      + "float32 and steps it, which gives numpy_ref's numbers bit for bit." }));
  document.getElementById("arithmetic").dataset.rendered = "1";
}

// How many float32 numbers lie between numpy_ref's value and this page's float64 value rounded to float32.
function stepsNote(state, u, value) {
  const d = state.arrays[`${u.layer}_steps`].at(u.c, u.y, u.x);
  if (d === -128) return "stored as it is (the sum sits too near a float32 rounding boundary, or cancels to near 0)";
  if (d === 0) return "the same float32 number";
  return `${Math.abs(d)} float32 step${Math.abs(d) === 1 ? "" : "s"} ${d > 0 ? "above" : "below"} `
    + `${fmt(Math.fround(value), 9)}`;
}

function row(label, value, cls) {
  return el("tr", cls ? { class: cls } : {}, el("td", { text: label }), el("td", { text: value }));
}

function box_(canvas, y0, y1, x0, x1, zoom) {
  const ctx = canvas.getContext("2d");
  ctx.strokeStyle = "#00e5ff";
  ctx.lineWidth = canvas.width > 100 ? 2 : 1;
  ctx.strokeRect(x0 * zoom - 0.5, y0 * zoom - 0.5, (x1 - x0 + 1) * zoom + 1, (y1 - y0 + 1) * zoom + 1);
}

// Per input channel: its k*k products' partial sum; the largest |partial| channel's products in a table.
function channelPartials(T, state) {
  const kk = T.k * T.k;
  const partial = new Float64Array(T.C);
  for (let c = 0; c < T.C; c++) for (let j = 0; j < kk; j++) partial[c] += T.ts[c * kk + j];
  const order = Array.from(partial.keys()).sort((a, b) => Math.abs(partial[b]) - Math.abs(partial[a]));
  if (state.arithChannel == null || state.arithChannel >= T.C) state.arithChannel = order[0];
  const c = state.arithChannel;
  const bars = el("canvas", { class: "bars", width: String(Math.max(T.C * 4, 40)), height: "80" });
  const ctx = bars.getContext("2d");
  const m = Math.max(...partial.map(Math.abs)) || 1;
  for (let i = 0; i < T.C; i++) {
    const h = 38 * partial[i] / m;
    ctx.fillStyle = i === c ? "#000" : partial[i] >= 0 ? "#b2182b" : "#2166ac";
    ctx.fillRect(i * (bars.width / T.C), 40 - Math.max(h, 0), Math.max(1, bars.width / T.C - 1), Math.abs(h));
  }
  bars.addEventListener("click", (event) => {
    const r = bars.getBoundingClientRect();
    state.arithChannel = Math.min(T.C - 1, Math.floor((event.clientX - r.left) / r.width * T.C));
    renderArithmetic(state);
  });
  const table = el("table", { class: "products" });
  for (let kh = 0; kh < T.k; kh++) {
    const tr = el("tr");
    for (let kw = 0; kw < T.k; kw++) {
      const j = c * kk + kh * T.k + kw;
      tr.append(el("td", { title: `kh=${kh}, kw=${kw}` },
        el("div", { class: "xin", text: fmt(T.xs[j], 4) }),
        el("div", { class: "w", text: "x " + fmt(T.ws[j], 4) }),
        el("div", { class: "t", text: "= " + fmt(T.ts[j], 4) })));
    }
    table.append(tr);
  }
  const top = order.slice(0, 8).map((i) => `c${i}: ${fmt(partial[i], 5)}`).join(", ");
  return el("div", {},
    el("h3", { text: "each input channel's partial sum (click a bar to open that channel)" }),
    bars,
    el("p", { class: "note", text: `largest channels: ${top}` }),
    el("h3", { text: `channel ${c}: input x weight = product (sum ${fmt(partial[c], 7)})` }),
    table);
}
