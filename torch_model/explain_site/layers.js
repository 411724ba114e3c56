// View 3: max pool windows (which input won), ReLU masks, the FC layers' largest terms for a class.
import { el, montage } from "./draw.js";
import { fmt } from "./data.js";

export function renderPool(state) {
  const box = document.getElementById("pool-view");
  const layers = state.site.layers;
  const u = state.poolUnit;
  const i = layers.findIndex((l) => l.name === u.layer);
  const layer = layers[i];
  const input = state.acts[layers[i - 1].name];               // the ReLU output the pool reads
  const arg = state.arrays[`${u.layer}_argmax`].at(u.c, u.y, u.x);
  const k = layer.kernel, s = layer.stride;
  const table = el("table", { class: "window" });
  let best = -Infinity, bestAt = -1;
  for (let kh = 0; kh < k; kh++) {
    const tr = el("tr");
    for (let kw = 0; kw < k; kw++) {
      const v = input.at(u.c, u.y * s + kh, u.x * s + kw);
      if (v > best) { best = v; bestAt = kh * k + kw; }
      tr.append(el("td", { class: kh * k + kw === arg ? "winner" : "", text: fmt(v, 5) }));
    }
    table.append(tr);
  }
  const out = state.acts[u.layer].at(u.c, u.y, u.x);
  const select = el("select", {
    onchange: (e) => { state.poolUnit = defaultPoolUnit(state, e.target.value); renderPool(state); },
  }, ...["pool1", "pool2", "pool5"].map((n) => el("option", n === u.layer ? { selected: "" } : {}, n)));
  box.replaceChildren(
    el("h3", { text: "max pool: which input won" }),
    el("p", {}, "pool layer ", select,
      ` unit [c=${u.c}, y=${u.y}, x=${u.x}] (click a pool map in the overview to pick another)`),
    el("div", { class: "row" }, table,
      el("div", {},
        el("p", { text: `its 3x3 window in ${layers[i - 1].name} (rows ${u.y * s}..${u.y * s + k - 1}, columns ${u.x * s}..${u.x * s + k - 1}); the winner numpy_ref's max pool picked (its argmax, the first maximum) is outlined: kh=${Math.floor(arg / k)}, kw=${arg % k}.` }),
        el("p", { text: `${u.layer}[${u.c}, ${u.y}, ${u.x}] = ${fmt(out, 7)}; the largest of the nine here: ${fmt(best, 7)} at kh=${Math.floor(bestAt / k)}, kw=${bestAt % k} (${bestAt === arg && best === out ? "the same" : "DIFFERENT"}).` }),
        el("p", { class: "note", text: "Backward, the pool sends this output's gradient to the winner alone (view 4)." }))));
}

export function defaultPoolUnit(state, name) {
  const t = state.acts[name];
  let best = 0;
  for (let i = 1; i < t.size; i++) if (t.data[i] > t.data[best]) best = i;
  const [, H, W] = t.shape;
  return { layer: name, c: Math.floor(best / (H * W)), y: Math.floor(best / W) % H, x: best % W };
}

export function renderRelu(state) {
  const box = document.getElementById("relu-view");
  const convs = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"];
  const rows = convs.map((n) => {
    const t = state.acts[n];
    let on = 0;
    for (let i = 0; i < t.size; i++) if (t.data[i] > 0) on++;
    return el("tr", {}, el("td", { text: n }), el("td", { text: `${on} of ${t.size}` }),
      el("td", { text: `${(100 * on / t.size).toFixed(1)}%` }));
  });
  const name = state.unit.layer;
  const t = state.acts[name];
  const mask = new Float32Array(t.size);
  for (let i = 0; i < t.size; i++) mask[i] = t.data[i] > 0 ? 1 : 0;
  const canvas = el("canvas", { class: "map" });
  montage(canvas, { data: mask, shape: t.shape }, { lo: 0, hi: 1 });
  box.replaceChildren(
    el("h3", { text: "ReLU masks: where the conv output is positive the ReLU passes it (forward) and its gradient (backward)" }),
    el("table", { class: "masks" }, el("tr", {}, el("th", { text: "layer" }), el("th", { text: "positive units" }),
      el("th", { text: "share" })), ...rows),
    el("p", { text: `${name}'s mask (light: passes, black: 0):` }), canvas);
}

export function renderFC(state) {
  const box = document.getElementById("fc-view");
  const { meta, site } = state;
  const c = state.fcClass ?? meta.pred;
  const select = el("select", { onchange: (e) => { state.fcClass = Number(e.target.value); state.fcPath = []; renderFC(state); } },
    ...site.classes.map((n, k) => el("option", { value: String(k), ...(k === c ? { selected: "" } : {}) },
      `${k} ${n}${k === meta.pred ? " (predicted)" : ""}${k === meta.label ? " (true)" : ""}`)));
  const sums = [meta.fc.fc8[c]];
  for (const step of state.fcPath || []) {
    const next = meta.fc[step.layer][String(step.unit)];
    if (next) sums.push(next);
  }
  box.replaceChildren(
    el("h3", { text: "the FC layers' largest terms" }),
    el("p", {}, "class ", select, " Each sum below is out = bias + sum_j W[unit, j] x[j]; its largest terms by |W x|, the rest added up. Click a term of fc8 or fc7 to open the unit it comes from, one layer down."),
    ...sums.map((S, depth) => sumTable(state, S, depth)));
  document.getElementById("layers").dataset.rendered = "1";
}

const INPUT_NAME = { fc8: "relu7", fc7: "relu6", fc6: "pool5 (flattened)" };

function sumTable(state, S, depth) {
  let shown = 0;
  const rows = S.terms.map((t) => {
    shown += t.t;
    const where = S.layer === "fc6" ? ` = pool5[c=${Math.floor(t.j / 25)}, y=${Math.floor(t.j / 5) % 5}, x=${t.j % 5}]` : "";
    const below = S.layer === "fc6" ? null : S.layer === "fc8" ? "fc7" : "fc6";
    const open = below && state.meta.fc[below][String(t.j)];
    return el("tr", open ? { class: "link", onclick: () => {
      state.fcPath = (state.fcPath || []).slice(0, depth).concat([{ layer: below, unit: t.j }]);
      renderFC(state);
    } } : {},
    el("td", { text: `j=${t.j}${where}` }), el("td", { text: fmt(t.w, 5) }), el("td", { text: fmt(t.x, 5) }),
    el("td", { text: fmt(t.t, 6) }));
  });
  const total = shown + S.rest + S.bias;
  return el("table", { class: "fc" },
    el("caption", { text: `${S.layer}[${S.unit}] from ${INPUT_NAME[S.layer]}: ${S.count} terms` }),
    el("tr", {}, el("th", { text: "input j" }), el("th", { text: "weight" }), el("th", { text: "input" }), el("th", { text: "product" })),
    ...rows,
    el("tr", {}, el("td", { text: `the other ${S.count - S.terms.length} terms` }), el("td"), el("td"), el("td", { text: fmt(S.rest, 6) })),
    el("tr", {}, el("td", { text: "bias" }), el("td"), el("td"), el("td", { text: fmt(S.bias, 6) })),
    el("tr", { class: "total" }, el("td", { text: "sum (this page)" }), el("td"), el("td"), el("td", { text: fmt(total, 7) })),
    el("tr", {}, el("td", { text: "numpy_ref's value" }), el("td"), el("td"), el("td", { text: fmt(S.value, 7) })));
}
