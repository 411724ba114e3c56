// Loading what `alexnet explain` wrote: site.json, the conv weights, one image's arrays; and the arrays the page
// derives from them. ReLU outputs are the conv outputs where positive, pool outputs the ReLU outputs at
// numpy_ref's argmax (selection only). The input x (the 224x224 resize) and the conv outputs are computed here in
// float64 (resize64, convSum64), rounded to float32 and moved by numpy_ref's stored number of float32 steps
// (stepped): all of them bit for bit numpy_ref's float32 numbers.

export class Tensor {
  // data: a typed array in C order; shape: [C, H, W] or [N]
  constructor(data, shape) {
    this.data = data;
    this.shape = shape;
  }
  get size() { return this.data.length; }
  at(c, y, x) { return this.data[(c * this.shape[1] + y) * this.shape[2] + x]; }
  channel(c) {
    const n = this.shape[1] * this.shape[2];
    return this.data.subarray(c * n, (c + 1) * n);
  }
}

export async function fetchJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// The .bin.gz files: gzip of arrays one after another, each as byte planes (all first bytes, then all second
// bytes, ...), little-endian. index: {name: {dtype, shape, offset}}.
export async function fetchArrays(url, index) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const stream = response.body.pipeThrough(new DecompressionStream("gzip"));
  const buf = new Uint8Array(await new Response(stream).arrayBuffer());
  const out = {};
  for (const [name, d] of Object.entries(index)) {
    const n = d.shape.reduce((a, b) => a * b, 1);
    const size = d.dtype === "float32" ? 4 : 1;
    const bytes = new Uint8Array(n * size);
    for (let p = 0; p < size; p++) {
      const base = d.offset + p * n;
      for (let i = 0; i < n; i++) bytes[i * size + p] = buf[base + i];
    }
    const data = d.dtype === "float32" ? new Float32Array(bytes.buffer)
      : d.dtype === "int8" ? new Int8Array(bytes.buffer) : bytes;
    out[name] = new Tensor(data, d.shape);
  }
  return out;
}

export function relu(t) {
  const out = new Float32Array(t.size);
  for (let i = 0; i < t.size; i++) out[i] = t.data[i] > 0 ? t.data[i] : 0;
  return new Tensor(out, t.shape);
}

// A 3x3 stride-2 max pool's output taken from its input at numpy_ref's winners (argmax: kh*3 + kw per output).
export function poolSelect(input, argmax, layer) {
  const [C, OH, OW] = argmax.shape;
  const { kernel: k, stride: s } = layer;
  const out = new Float32Array(C * OH * OW);
  for (let c = 0; c < C; c++)
    for (let y = 0; y < OH; y++)
      for (let x = 0; x < OW; x++) {
        const i = (c * OH + y) * OW + x;
        const a = argmax.data[i];
        out[i] = input.at(c, y * s + Math.floor(a / k), x * s + (a % k));
      }
  return new Tensor(out, [C, OH, OW]);
}

// Every layer's output by name (x, conv1, relu1, pool1, ..., fc6, relu6, fc7, relu7, fc8), from the stored arrays
// and the conv weights.
export function activations(arrays, layers, weights) {
  const x = new Tensor(stepped(resize64(arrays.image.data), arrays.x_steps.data, arrays.x_exact.data, "x"),
    arrays.x_steps.shape);
  const acts = { x };
  let prev = x;
  for (const layer of layers) {
    let t;
    if (layer.kind === "Conv2d") t = convOutput(prev, weights, layer, arrays);
    else if (layer.kind === "Linear") t = arrays[layer.name];
    else if (layer.kind === "ReLU") t = relu(prev);
    else if (layer.kind === "MaxPool2d") t = poolSelect(prev, arrays[`${layer.name}_argmax`], layer);
    else if (layer.kind === "Flatten") t = new Tensor(prev.data, [prev.size]);
    else t = prev;                                   // dropout: the identity in eval mode
    acts[layer.name] = t;
    prev = t;
  }
  return acts;
}

// A conv layer's sums in float64, in an order that keeps the inner loop long: for each input value, its products
// with the F weights that meet it are added to F accumulators (zeros are skipped: the ReLU's and the padding's add
// nothing); then the bias. Each product of two float32 numbers is exact in float64, and any order of adding lands
// within float64 rounding of the exact sum.
export function convSum64(input, W, b, layer) {
  const [C, H, Wd] = input.shape;
  const [F, OH, OW] = layer.out;
  const k = layer.kernel, s = layer.stride, p = layer.padding;
  const x = input.data, n = C * k * k, P = OH * OW;
  const wt = new Float64Array(n * F);                // the weights as (c, kh, kw, f)
  for (let f = 0; f < F; f++) for (let j = 0; j < n; j++) wt[j * F + f] = W[f * n + j];
  const acc = new Float64Array(P * F);               // (oy, ox, f)
  for (let c = 0; c < C; c++)
    for (let kh = 0; kh < k; kh++)
      for (let kw = 0; kw < k; kw++) {
        const wb = ((c * k + kh) * k + kw) * F;
        for (let oy = 0; oy < OH; oy++) {
          const ih = oy * s - p + kh;
          if (ih < 0 || ih >= H) continue;
          for (let ox = 0; ox < OW; ox++) {
            const iw = ox * s - p + kw;
            if (iw < 0 || iw >= Wd) continue;
            const v = x[(c * H + ih) * Wd + iw];
            if (v === 0) continue;
            const ab = (oy * OW + ox) * F;
            for (let f = 0; f < F; f++) acc[ab + f] += v * wt[wb + f];
          }
        }
      }
  const out = new Float64Array(F * P);               // (f, oy, ox)
  for (let f = 0; f < F; f++) for (let q = 0; q < P; q++) out[f * P + q] = acc[q * F + f] + b[f];
  return out;
}

// The 28x28 uint8 image resized to 224x224 in float64: pixels / 255, then torch's bilinear (align_corners=False:
// source row (i + 0.5) / 8 - 0.5, clamped at 0). explain.py's resize64 does the same operations in the same order,
// so both get the same float64 numbers; the stored steps then give numpy_ref's input x (torch's float32 resize).
export function resize64(image) {
  const src = new Float64Array(224), i0 = new Int32Array(224), i1 = new Int32Array(224);
  for (let i = 0; i < 224; i++) {
    src[i] = Math.max((i + 0.5) * 0.125 - 0.5, 0);
    i0[i] = Math.floor(src[i]);
    i1[i] = Math.min(i0[i] + 1, 27);
  }
  const p = (y, x) => image[y * 28 + x] / 255;
  const out = new Float64Array(224 * 224);
  for (let y = 0; y < 224; y++) {
    const ly1 = src[y] - i0[y], ly0 = 1 - ly1;
    for (let x = 0; x < 224; x++) {
      const lx1 = src[x] - i0[x], lx0 = 1 - lx1;
      const top = lx0 * p(i0[y], i0[x]) + lx1 * p(i0[y], i1[x]);
      const bottom = lx0 * p(i1[y], i0[x]) + lx1 * p(i1[y], i1[x]);
      out[y * 224 + x] = ly0 * top + ly1 * bottom;
    }
  }
  return out;
}

// numpy_ref's float32 numbers from float64 values computed here: each rounded to float32, then moved by steps[i]
// float32 steps; step code -128: the value is the next one stored in `exact` (a conv sum too near a float32
// rounding boundary for every order of adding to round alike, or numpy_ref's value over 127 steps away).
export function stepped(values, steps, exact, name) {
  const out = new Float32Array(values);              // rounded to float32, to nearest
  const bits = new Int32Array(out.buffer);
  let e = 0;
  for (let i = 0; i < out.length; i++) {
    const d = steps[i];
    if (d === -128) { out[i] = exact[e++]; continue; }
    if (d === 0) continue;
    const b = bits[i];
    const key = (b >= 0 ? b : -(b & 0x7fffffff) - 1) + d;   // float32 numbers in order: consecutive keys
    bits[i] = key >= 0 ? key : (-(key + 1)) | 0x80000000;
  }
  if (e !== exact.length) throw new Error(`${name}: ${exact.length} exact values stored, ${e} used`);
  return out;
}

// numpy_ref's float32 output of a conv layer: its float64 sums (convSum64), stepped.
export function convOutput(input, weights, layer, arrays) {
  const sum = convSum64(input, weights[`${layer.name}.weight`].data, weights[`${layer.name}.bias`].data, layer);
  const name = layer.name;
  return new Tensor(stepped(sum, arrays[`${name}_steps`].data, arrays[`${name}_exact`].data, name), layer.out);
}

// int8 square-root companded gradient -> float: g = sign(q) (q / 127)^2 * scale
export function decompand(t, scale) {
  const out = new Float32Array(t.size);
  for (let i = 0; i < t.size; i++) {
    const q = t.data[i] / 127;
    out[i] = Math.sign(q) * q * q * scale;
  }
  return new Tensor(out, t.shape);
}

export function fmt(v, digits = 6) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e-3 && a < 1e5 ? Number(v.toPrecision(digits)).toString() : v.toExponential(digits - 1);
}
