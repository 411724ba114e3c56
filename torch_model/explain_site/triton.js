// View 5: the clicked conv unit inside triton_kernels' forward kernel (_conv2d_fwd_kernel): an implicit GEMM
// out[m, f] = sum_k A[m, k] W[k, f] with rows m = (n, oh, ow), columns f, reduction k = (kh, kw, c), c fastest.
// The block sizes come from site.json, which `alexnet explain` fills from triton_kernels.conv's configurations.
import { el } from "./draw.js";
import { fmt } from "./data.js";
import { convTerms } from "./arithmetic.js";

const cdiv = (a, b) => Math.ceil(a / b);

export function tritonPlan(layer, cfg, f, y, x, batch, n, smallCBelow) {
  const [Cg, , ] = layer.in, [Fg, OH, OW] = layer.out;
  const KH = layer.kernel, KW = layer.kernel;
  const K = Cg * KH * KW, M = batch * OH * OW;
  const { BLOCK_M: BM, BLOCK_N: BN, BLOCK_K: BK } = cfg;
  const m = n * OH * OW + y * OW + x;
  const numPidM = cdiv(M, BM), numPidN = cdiv(Fg, BN);
  const pidM = Math.floor(m / BM), pidN = Math.floor(f / BN);
  const smallC = Cg < smallCBelow;
  const steps = [];
  if (smallC) {                       // k flattened over (kh, kw, c), BLOCK_K at a time
    for (let k0 = 0; k0 < K; k0 += BK) {
      const ks = [];
      for (let k = k0; k < Math.min(k0 + BK, K); k++)
        ks.push({ c: k % Cg, kw: Math.floor(k / Cg) % KW, kh: Math.floor(k / (Cg * KW)) });
      steps.push({ label: `k ${k0}..${Math.min(k0 + BK, K) - 1}`, ks });
    }
  } else {                            // tap by tap, BLOCK_K channels at a time
    const chunks = cdiv(Cg, BK);
    for (let t = 0; t < KH * KW * chunks; t++) {
      const tap = Math.floor(t / chunks), c0 = (t - tap * chunks) * BK;
      const kh = Math.floor(tap / KW), kw = tap - kh * KW;
      const ks = [];
      for (let c = c0; c < Math.min(c0 + BK, Cg); c++) ks.push({ c, kh, kw });
      steps.push({ label: `tap (${kh}, ${kw}), channels ${c0}..${Math.min(c0 + BK, Cg) - 1}`, ks });
    }
  }
  return { Cg, Fg, OH, OW, K, M, BM, BN, BK, m, numPidM, numPidN, pidM, pidN, pid: pidM * numPidN + pidN,
    row: m - pidM * BM, col: f - pidN * BN, smallC, steps };
}

export function renderTriton(state) {
  const box = document.getElementById("triton-view");
  const u = state.unit;
  const { site } = state;
  const layer = site.layers.find((l) => l.name === u.layer);
  const tri = site.triton;
  const smallC = layer.in[0] < tri.small_c_below;
  const configs = (smallC ? tri.fwd_small_c : tri.fwd).map((c, i) => ({ ...c, name: `sm_90 candidate ${i + 1}` }))
    .concat([{ ...tri.interpret, name: "the interpreter's (CPU)" }]);
  if (state.tritonCfg == null || state.tritonCfg >= configs.length) state.tritonCfg = 0;
  state.tritonBatch = state.tritonBatch || 1;
  state.tritonN = Math.min(state.tritonN || 0, state.tritonBatch - 1);
  const cfg = configs[state.tritonCfg];
  const P = tritonPlan(layer, cfg, u.c, u.y, u.x, state.tritonBatch, state.tritonN, tri.small_c_below);

  // the unit's products, regrouped into the kernel's K steps (exact float32 x float32 in float64)
  const T = convTerms(state, u.layer, u.c, u.y, u.x);
  let acc = 0;
  const rows = P.steps.map((s, i) => {
    let part = 0;
    for (const q of s.ks) part += T.ts[(q.c * T.k + q.kh) * T.k + q.kw];
    acc += part;
    return el("tr", {}, el("td", { text: String(i) }), el("td", { text: s.label }),
      el("td", { text: fmt(part, 7) }), el("td", { text: fmt(acc, 8) }));
  });
  const value = acc + T.bias;

  const cfgSelect = el("select", { onchange: (e) => { state.tritonCfg = Number(e.target.value); renderTriton(state); } },
    ...configs.map((c, i) => el("option", { value: String(i), ...(i === state.tritonCfg ? { selected: "" } : {}) },
      `${c.name}: BLOCK_M ${c.BLOCK_M}, BLOCK_N ${c.BLOCK_N}, BLOCK_K ${c.BLOCK_K}, ${c.num_warps} warps, ${c.num_stages} stages`)));
  const batch = el("input", { type: "number", min: "1", value: String(state.tritonBatch),
    onchange: (e) => { state.tritonBatch = Math.max(1, Number(e.target.value) || 1); renderTriton(state); } });
  const pos = el("input", { type: "number", min: "0", value: String(state.tritonN),
    onchange: (e) => { state.tritonN = Math.max(0, Number(e.target.value) || 0); renderTriton(state); } });

  box.replaceChildren(
    el("p", { class: "note", text: `${tri.kernel}. Forward as an implicit GEMM: rows m = (n, oh, ow) of M = N*OH*OW, `
      + `columns f of Fg filters, reduction k = (kh, kw, c) with c fastest (numpy_ref's im2col rows run (c, kh, kw): the same `
      + `products in another order). The GPU's autotuner picks one of the sm_90 candidates per shape; all are listed.` }),
    el("p", {}, "configuration ", cfgSelect),
    el("p", {}, "batch size N ", batch, " this image's place n in the batch ", pos),
    el("table", { class: "result" },
      tr("unit", `${u.layer}[f=${u.c}, oh=${u.y}, ow=${u.x}] of image n=${state.tritonN}`),
      tr("GEMM", `M = N*OH*OW = ${state.tritonBatch}*${P.OH}*${P.OW} = ${P.M}, Fg = ${P.Fg}, K = Cg*KH*KW = ${P.Cg}*${layer.kernel}*${layer.kernel} = ${P.K}`),
      tr("row m", `n*OH*OW + oh*OW + ow = ${P.m}`),
      tr("grid", `(cdiv(M, BLOCK_M) * cdiv(Fg, BLOCK_N), groups) = (${P.numPidM} * ${P.numPidN}, 1) = ${P.numPidM * P.numPidN} programs`),
      tr("program", `pid_m = m // BLOCK_M = ${P.pidM}, pid_n = f // BLOCK_N = ${P.pidN}, tl.program_id(0) = pid_m * ${P.numPidN} + pid_n = ${P.pid}`),
      tr("its tile", `rows ${P.pidM * P.BM}..${Math.min(P.M, (P.pidM + 1) * P.BM) - 1} x filters ${P.pidN * P.BN}..${Math.min(P.Fg, (P.pidN + 1) * P.BN) - 1}; the unit is row ${P.row}, column ${P.col} of the ${P.BM}x${P.BN} accumulator`),
      tr("K loop", P.smallC ? `SMALL_C (Cg = ${P.Cg} < ${tri.small_c_below}): k flattened, ${P.steps.length} steps of BLOCK_K = ${P.BK}`
        : `tap by tap: ${layer.kernel * layer.kernel} taps x cdiv(${P.Cg}, ${P.BK}) channel chunks = ${P.steps.length} steps; a tap in the padding loads 0`),
      tr("epilogue", `acc + bias = ${fmt(value, 9)}, then the fused ReLU: ${fmt(Math.max(value, 0), 9)} (numpy_ref before its ReLU: ${fmt(state.acts[u.layer].at(u.c, u.y, u.x), 9)})`)),
    tileDiagram(P),
    el("table", { class: "ksteps" },
      el("tr", {}, el("th", { text: "step" }), el("th", { text: "k range" }), el("th", { text: "this step's products, summed" }),
        el("th", { text: "the accumulator after it" })), ...rows));
  document.getElementById("triton").dataset.rendered = "1";
}

function tr(a, b) { return el("tr", {}, el("td", { text: a }), el("td", { text: b })); }

// The output matrix (M rows x Fg columns) cut into tiles; the clicked unit's program filled in.
function tileDiagram(P) {
  const W = 600, cell = Math.max(2, Math.min(24, Math.floor(W / P.numPidN)));
  const rowH = Math.max(2, Math.min(12, Math.floor(240 / P.numPidM)));
  const canvas = el("canvas", { class: "tiles", width: String(P.numPidN * cell + 1), height: String(P.numPidM * rowH + 1) });
  const ctx = canvas.getContext("2d");
  ctx.strokeStyle = "#bbb";
  for (let i = 0; i < P.numPidM; i++)
    for (let j = 0; j < P.numPidN; j++) {
      if (i === P.pidM && j === P.pidN) { ctx.fillStyle = "#d6604d"; ctx.fillRect(j * cell, i * rowH, cell, rowH); }
      ctx.strokeRect(j * cell + 0.5, i * rowH + 0.5, cell, rowH);
    }
  return el("figure", {}, canvas, el("figcaption", {
    text: `the output as a ${P.M} x ${P.Fg} matrix in ${P.numPidM} x ${P.numPidN} tiles of ${P.BM} x ${P.BN}; one program per tile; this unit's in red` }));
}
