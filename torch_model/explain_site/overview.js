// View 1: the input (28x28 and 224x224), every layer's output maps, the class probabilities.
import { el, hit, mergeRanges, montage, outline, plane, rangeOf } from "./draw.js";
import { fmt } from "./data.js";

// The layers drawn as maps (the FC layers as one strip each).
export const MAP_LAYERS = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "conv4", "relu4",
  "conv5", "relu5", "pool5", "fc6", "relu6", "fc7", "relu7", "fc8"];

const DESCRIBE = {
  Conv2d: "before its ReLU (blue negative, red positive)",
  ReLU: "max(0, conv): the conv output where positive",
  MaxPool2d: "3x3 windows, stride 2: each output is its window's largest input",
  Linear: "before its ReLU",
};

export function renderOverview(state) {
  const { site, meta, acts, arrays } = state;
  const classes = site.classes;
  plane(document.getElementById("input28"), arrays.image.data, 28, 28, "grey");
  const x8 = new Uint8Array(224 * 224);
  for (let i = 0; i < x8.length; i++) x8[i] = Math.round(acts.x.data[i] * 255);
  plane(document.getElementById("input224"), x8, 224, 224, "grey");

  const probs = document.getElementById("probabilities");
  probs.replaceChildren();
  meta.probs.forEach((p, c) => {
    const mark = c === meta.pred ? " predicted" : "";
    const truth = c === meta.label ? " (true class)" : "";
    probs.append(el("div", { class: "prob" + mark, "data-class": String(c), "data-p": String(p) },
      el("span", { class: "name", text: classes[c] + truth }),
      el("span", { class: "bar", style: `width:${Math.round(p * 300)}px` }),
      el("span", { class: "num", text: (100 * p).toFixed(2) + "%" })));
  });
  const verdict = meta.label == null ? `predicted ${classes[meta.pred]}`
    : meta.label === meta.pred ? `right: ${classes[meta.pred]}` : `wrong: a ${classes[meta.label]} taken for a ${classes[meta.pred]}`;
  document.getElementById("verdict").textContent = `${meta.source}: ${verdict}`;
  renderMaps(state);
  document.getElementById("overview").dataset.rendered = "1";
}

export function renderMaps(state) {
  const { site, acts } = state;
  const mode = document.querySelector("input[name=scale]:checked").value;
  const layers = Object.fromEntries(site.layers.map((l) => [l.name, l]));
  const ranges = Object.fromEntries(MAP_LAYERS.map((n) => [n, rangeOf(acts[n].data)]));
  const global = mergeRanges(Object.values(ranges));
  const box = document.getElementById("maps");
  box.replaceChildren();
  state.mapCanvases = {};
  for (const name of MAP_LAYERS) {
    const t = acts[name];
    const layer = layers[name];
    const scale = mode === "local" && t.shape.length === 3 ? "local" : mode === "global" ? global : ranges[name];
    const canvas = el("canvas", { class: "map", "data-layer": name });
    const fc = t.shape.length === 1;
    montage(canvas, fc ? { ...t, shape: [1, 1, t.shape[0]], data: t.data } : t, scale,
      fc ? { cols: 1, zoom: 1, maxWidth: 4096 } : {});
    if (fc) canvas.classList.add("strip");
    canvas.addEventListener("click", (event) => {
      const u = hit(canvas, event);
      if (u && !fc) state.select({ layer: name, ...u });
    });
    state.mapCanvases[name] = canvas;
    const shape = t.shape.join("x");
    box.append(el("div", { class: "layer" },
      el("h3", { text: `${name} ${shape}` }),
      el("p", { class: "note", text: `${DESCRIBE[layer.kind] || ""}; range ${fmt(ranges[name].lo, 3)} .. ${fmt(ranges[name].hi, 3)}` }),
      canvas));
  }
  highlight(state);
}

// Outline the selected unit on its map.
export function highlight(state) {
  const u = state.unit;
  const canvas = u && state.mapCanvases && state.mapCanvases[u.layer];
  if (canvas) outline(canvas, u.c, u.y, u.y, u.x, u.x);
}
