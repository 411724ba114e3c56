// Loading what `alexnet explain` wrote: site.json, the conv weights, one image's arrays; and the arrays the page
// derives by selection only (no arithmetic): ReLU outputs are the conv outputs where positive, pool outputs are
// the ReLU outputs at numpy_ref's argmax. Both are then bit for bit numpy_ref's float32 numbers.

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

// Every layer's output by name (x, conv1, relu1, pool1, ..., fc6, relu6, fc7, relu7, fc8), from the stored arrays.
export function activations(arrays, layers) {
  const acts = { x: arrays.x };
  let prev = arrays.x;
  for (const layer of layers) {
    let t;
    if (layer.kind === "Conv2d" || layer.kind === "Linear") t = arrays[layer.name];
    else if (layer.kind === "ReLU") t = relu(prev);
    else if (layer.kind === "MaxPool2d") t = poolSelect(prev, arrays[`${layer.name}_argmax`], layer);
    else if (layer.kind === "Flatten") t = new Tensor(prev.data, [prev.size]);
    else t = prev;                                   // dropout: the identity in eval mode
    acts[layer.name] = t;
    prev = t;
  }
  return acts;
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
