// View 4: the gradient of one class's score flowing back, layer by layer, to the saliency map; and one weight per
// layer: numpy_ref's analytic gradient beside a central finite difference.
import { el, montage, plane, rangeOf } from "./draw.js";
import { Tensor, decompand, fmt } from "./data.js";

// From the score down to the input. Stored (numpy_ref's backward, int8): fc8, relu7, relu6, pool5, relu4, relu3,
// pool2, pool1 and x. The others the page derives with numpy_ref's forward, no new gradient arithmetic:
// "mask": a conv/FC output before its ReLU gets the ReLU output's gradient where the pre-activation is positive;
// "route": a ReLU output feeding a max pool gets each pool output's gradient at its window's winner (numpy_ref's
// argmax), added up where windows overlap - exactly max_pool2d_backward.
const STAGES = [
  ["fc8", "the start: d score / d logits is one-hot on the chosen class"],
  ["relu7", "fc8 backward: d score / d relu7 = W8[class, :] (the class's row of weights)"],
  ["fc7", "ReLU mask: the gradient passes where fc7 > 0", "mask", "relu7"],
  ["relu6", "fc7 backward: W7^T times the gradient above"],
  ["fc6", "ReLU mask: where fc6 > 0", "mask", "relu6"],
  ["pool5", "fc6 backward: W6^T times the gradient above, reshaped to 256x5x5"],
  ["relu5", "pool5 backward: each output's gradient goes to its window's winner alone (overlapping windows add up)", "route", "pool5"],
  ["conv5", "ReLU mask: where conv5 > 0", "mask", "relu5"],
  ["relu4", "conv5 backward: the gradient correlated with the flipped kernels (numpy_ref: W^T dout, then col2im)"],
  ["conv4", "ReLU mask: where conv4 > 0", "mask", "relu4"],
  ["relu3", "conv4 backward: a correlation with the flipped kernels"],
  ["conv3", "ReLU mask: where conv3 > 0", "mask", "relu3"],
  ["pool2", "conv3 backward: a correlation with the flipped kernels"],
  ["relu2", "pool2 backward: routed to each window's winner", "route", "pool2"],
  ["conv2", "ReLU mask: where conv2 > 0", "mask", "relu2"],
  ["pool1", "conv2 backward: a correlation with the flipped kernels"],
  ["relu1", "pool1 backward: routed to each window's winner", "route", "pool1"],
  ["conv1", "ReLU mask: where conv1 > 0", "mask", "relu1"],
  ["x", "conv1 backward (stride 4) onto the 224x224 input: the saliency map"],
];

export function stageGradient(state, c, k) {
  const [name, , kind, from] = STAGES[k];
  const { arrays, meta } = state;
  if (!kind) {
    const key = `grad${c}_${name}`;
    return decompand(arrays[key], meta.backward.scales[key]);
  }
  const above = stageGradient(state, c, STAGES.findIndex((s) => s[0] === from));
  const pre = state.acts[name];
  const out = new Float32Array(pre.size);
  if (kind === "mask") {
    for (let i = 0; i < pre.size; i++) out[i] = pre.data[i] > 0 ? above.data[i] : 0;
  } else {                                   // route: pool `from`'s gradient onto its input `name`
    const layer = state.site.layers.find((l) => l.name === from);
    const arg = arrays[`${from}_argmax`];
    const [C, OH, OW] = arg.shape, [, H, W] = pre.shape;
    for (let ch = 0; ch < C; ch++)
      for (let y = 0; y < OH; y++)
        for (let x = 0; x < OW; x++) {
          const i = (ch * OH + y) * OW + x, a = arg.data[i];
          const yy = y * layer.stride + Math.floor(a / layer.kernel), xx = x * layer.stride + (a % layer.kernel);
          out[(ch * H + yy) * W + xx] += above.data[i];
        }
  }
  return new Tensor(out, pre.shape);
}

export function renderBackward(state) {
  const box = document.getElementById("backward-view");
  const { meta, site } = state;
  const classes = meta.backward.classes;
  if (!classes.includes(state.backClass)) state.backClass = classes[0];
  if (state.backStage == null) state.backStage = STAGES.length - 1;
  const c = state.backClass, k = state.backStage;
  const select = el("select", { onchange: (e) => { state.backClass = Number(e.target.value); renderBackward(state); } },
    ...classes.map((cl) => el("option", { value: String(cl), ...(cl === c ? { selected: "" } : {}) },
      `${site.classes[cl]}${cl === meta.pred ? " (predicted)" : ""}${cl === meta.label ? " (true)" : ""}`)));
  const slider = el("input", { type: "range", min: "0", max: String(STAGES.length - 1), value: String(k),
    oninput: (e) => { state.backStage = Number(e.target.value); renderBackward(state); } });
  const g = stageGradient(state, c, k);
  const canvas = el("canvas", { class: "map" });
  const [name, text] = STAGES[k];
  if (g.shape.length === 3) montage(canvas, g, rangeOf(g.data));
  else montage(canvas, { data: g.data, shape: [1, 1, g.shape[0]] }, rangeOf(g.data), { cols: 1, zoom: 1, maxWidth: 4096 });
  if (g.shape.length === 1) canvas.classList.add("strip");
  let nonzero = 0;
  for (let i = 0; i < g.size; i++) if (g.data[i] !== 0) nonzero++;

  // the saliency: |d score / d input| on the 224x224 input and carried back through the resize to the 28x28 pixels
  const sx = stageGradient(state, c, STAGES.length - 1);
  const abs224 = sx.data.map(Math.abs);
  const s28 = state.arrays[`saliency${c}_28`].data.map(Math.abs);
  const c224 = el("canvas", { class: "rf" }), c28 = el("canvas", { class: "rf px" });
  plane(c224, abs224, 224, 224, rangeOf(abs224));
  plane(c28, s28, 28, 28, rangeOf(s28));

  box.replaceChildren(
    el("p", {}, "the score of ", select, ` (its logit), d score / d (each layer's output), by numpy_ref's backward (float64 for the predicted class, float32 for a second one; stored as int8, square-root companded: for drawing). Stages marked derived are selections or routings of the stored ones by numpy_ref's ReLU masks and pool winners.`),
    el("p", {}, "stage ", slider, ` ${STAGES.length - k}/${STAGES.length}: d score / d ${name} ${g.shape.join("x")} - ${text}${STAGES[k][2] ? " (derived here from " + STAGES[k][3] + "'s)" : ""}; ${nonzero} of ${g.size} entries non-zero`),
    canvas,
    el("div", { class: "row" },
      el("figure", {}, c224, el("figcaption", { text: "saliency |d score / d input| on the 224x224 input" })),
      el("figure", {}, c28, el("figcaption", { text: "carried back through the bilinear resize to the 28x28 pixels (A^T G B)" }))));
  document.getElementById("backward").dataset.rendered = "1";
  renderGradcheck(state);
}

function renderGradcheck(state) {
  const box = document.getElementById("gradcheck-view");
  const rows = state.meta.gradcheck.concat(state.userChecks || []);
  if (state.checkRow == null) state.checkRow = 0;
  const r = rows[state.checkRow];
  const cls = state.site.classes[state.meta.pred];
  box.replaceChildren(
    el("h3", { text: `one weight per layer: d score(${cls}) / d w, analytic against a central difference (float64)` }),
    el("table", { class: "gradcheck" },
      el("tr", {}, ...["layer", "weight", "value", "analytic (backward)", "numeric (s(w+h) - s(w-h)) / 2h", "relative error"]
        .map((t) => el("th", { text: t }))),
      ...rows.map((q, i) => el("tr", { class: i === state.checkRow ? "chosen link" : "link",
        onclick: () => { state.checkRow = i; renderGradcheck(state); } },
      el("td", { text: q.layer }), el("td", { text: `[${q.index.join(", ")}]` }), el("td", { text: fmt(q.weight, 6) }),
      el("td", { text: fmt(q.analytic, 10) }), el("td", { text: fmt(q.numeric, 10) }), el("td", { text: fmt(q.rel_error, 2) })))),
    el("p", { text: `${r.layer}.weight[${r.index.join(", ")}]${state.checkRow < state.meta.gradcheck.length ? `: the weight with the largest |gradient| in ${r.layer}` : ", your choice"}. `
      + `h = ${r.step}; relative error |a - b| / max(1e-8, |a| + |b|) = ${fmt(r.rel_error, 2)}: `
      + `${r.rel_error < 1e-6 ? "the backward is right (float64 differences agree to ~1e-9)" : "large: a ReLU kink within h, or a wrong backward"}.` }),
    chooser(state));
}

// With --serve: any weight, checked by the server (POST /api/gradcheck) the same way.
function chooser(state) {
  const layer = el("select", { id: "check-layer" }, ...state.meta.gradcheck.map((q) => el("option", { value: q.layer }, q.layer)));
  const index = el("input", { id: "check-index", type: "text", value: "0, 0, 0, 0", size: "14" });
  const message = el("span", { id: "check-message" });
  const button = el("button", { id: "check-send", onclick: async () => {
    message.textContent = "computing in numpy_ref ...";
    const body = JSON.stringify({ image: state.id, layer: layer.value,
      index: index.value.split(",").map((v) => Number(v.trim())) });
    const reply = await fetch("api/gradcheck", { method: "POST", body, headers: { "Content-Type": "application/json" } })
      .then((r) => r.json()).catch((err) => ({ error: err.message }));
    if (reply.error) { message.textContent = reply.error; message.className = "error"; return; }
    state.userChecks = (state.userChecks || []).concat([reply]);
    state.checkRow = state.meta.gradcheck.length + state.userChecks.length - 1;
    renderGradcheck(state);
  } }, "check this weight");
  if (!state.serve) {
    button.disabled = true;
    message.textContent = " (a weight of your choice needs alexnet explain ... --serve)";
  }
  return el("p", {}, "another weight: ", layer, " index ", index, " ", button, message);
}
