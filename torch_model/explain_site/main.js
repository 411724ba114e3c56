// The explainer page: loads site.json and the conv weights once, one image at a time (index.html?image=N), and
// renders the seven views. <body data-ready="1"> once an image has rendered (the tests wait for it).
import { activations, fetchArrays, fetchJSON } from "./data.js";
import { el } from "./draw.js";
import { renderArithmetic } from "./arithmetic.js";
import { renderBackward } from "./backward.js";
import { renderConfusion } from "./confusion.js";
import { defaultPoolUnit, renderFC, renderPool, renderRelu } from "./layers.js";
import { renderMaps, renderOverview } from "./overview.js";
import { renderTriton } from "./triton.js";
import { renderUpload } from "./upload.js";

const CONVS = ["conv1", "conv2", "conv3", "conv4", "conv5"];
const state = {};
window.explainer = state;   // to look around in the browser's console: explainer.acts.conv2, explainer.weights

// A click on any map: a conv unit is taken apart as it is, a ReLU unit through its conv, a pool unit through the
// window position that won (its conv unit), and the pool view opens on it.
state.select = (u) => {
  const layers = state.site.layers;
  let { layer, c, y, x } = u;
  if (layer.startsWith("pool")) {
    state.poolUnit = { layer, c, y, x };
    const l = layers.find((q) => q.name === layer);
    const a = state.arrays[`${layer}_argmax`].at(c, y, x);
    y = y * l.stride + Math.floor(a / l.kernel);
    x = x * l.stride + (a % l.kernel);
    layer = "relu" + layer.slice(4);
  }
  if (layer.startsWith("relu")) layer = "conv" + layer.slice(4);
  if (!CONVS.includes(layer)) return;
  state.unit = { layer, c, y, x };
  state.arithChannel = null;
  renderUnitViews();
  renderMaps(state);
};

state.open = async (id) => {
  history.replaceState(null, "", `?image=${id}`);
  await loadImage(id);
};

function renderUnitViews() {
  const u = state.unit;
  const layer = state.site.layers.find((l) => l.name === u.layer);
  const set = (id, v, max) => { const e = document.getElementById(id); e.value = String(v); e.max = String(max); };
  document.getElementById("unit-layer").value = u.layer;
  set("unit-c", u.c, layer.out[0] - 1);
  set("unit-y", u.y, layer.out[1] - 1);
  set("unit-x", u.x, layer.out[2] - 1);
  renderArithmetic(state);
  renderTriton(state);
  renderPool(state);
  renderRelu(state);
}

async function loadImage(id) {
  document.body.dataset.ready = "0";
  const meta = await fetchJSON(`data/img-${id}.json`);
  const arrays = await fetchArrays(`data/img-${id}.bin.gz`, meta.arrays);
  const status = document.getElementById("status");
  status.textContent = `image ${id}: summing the five conv layers in float64 ...`;
  await new Promise((resolve) => setTimeout(resolve, 0));    // let the line show before the sums hold the page
  const t0 = performance.now();
  Object.assign(state, { id, meta, arrays, acts: activations(arrays, state.site.layers, state.weights) });
  const units = state.site.layers.filter((l) => l.kind === "Conv2d")
    .reduce((n, l) => n + l.out.reduce((a, b) => a * b), 0);
  status.textContent = `image ${id}: ${units.toLocaleString("en")} conv outputs summed here in float64 and `
    + `stepped to numpy_ref's float32 values in ${Math.round(performance.now() - t0)} ms (view 2 says how)`;
  Object.assign(state, { unit: { ...meta.default_unit }, fcClass: null, fcPath: [], backClass: meta.pred,
    backStage: null, checkRow: null, userChecks: [], arithChannel: null });
  state.poolUnit = defaultPoolUnit(state, "pool1");
  const select = document.getElementById("image-select");
  if (![...select.options].some((o) => o.value === id))
    select.append(el("option", { value: id }, `${id}: ${meta.source}, predicted ${state.site.classes[meta.pred]}`));
  select.value = id;
  renderOverview(state);
  renderUnitViews();
  renderFC(state);
  renderBackward(state);
  document.body.dataset.ready = "1";
}

function fail(err) {
  const box = document.getElementById("error");
  box.hidden = false;
  box.textContent = `error: ${err.message}`;
  console.error(err);
}

async function main() {
  state.site = await fetchJSON("data/site.json");
  const { site } = state;
  state.weights = await fetchArrays(`data/${site.weights.file}`, site.weights.arrays);
  const label = document.getElementById("model-label");
  label.textContent = site.model.label;
  if (!site.model.trained) {
    label.classList.add("untrained");
    label.textContent = `UNTRAINED NETWORK - ${site.model.label}`;
  }
  const select = document.getElementById("image-select");
  site.images.forEach((im, k) => select.append(el("option", { value: String(k) },
    `${k}: ${im.source} ${site.classes[im.label]}, predicted ${site.classes[im.pred]}${im.label === im.pred ? "" : " (wrong)"}`)));
  select.addEventListener("change", () => state.open(select.value).catch(fail));
  const layerSelect = document.getElementById("unit-layer");
  CONVS.forEach((n) => layerSelect.append(el("option", { value: n }, n)));
  const fromControls = () => {
    const layer = layerSelect.value;
    const l = site.layers.find((q) => q.name === layer);
    const clamp = (id, max) => Math.min(max - 1, Math.max(0, Number(document.getElementById(id).value) || 0));
    state.select({ layer, c: clamp("unit-c", l.out[0]), y: clamp("unit-y", l.out[1]), x: clamp("unit-x", l.out[2]) });
  };
  for (const id of ["unit-layer", "unit-c", "unit-y", "unit-x"])
    document.getElementById(id).addEventListener("change", fromControls);
  for (const r of document.querySelectorAll("input[name=scale]"))
    r.addEventListener("change", () => renderMaps(state));
  state.serve = (await fetchJSON("data/server.json")).serve === true;
  renderConfusion(state);
  renderUpload(state);
  const wanted = new URLSearchParams(location.search).get("image") || "0";
  if (!/^(\d+|u\d+)$/.test(wanted)) throw new Error(`?image=${wanted}: not an image number`);
  if (/^\d+$/.test(wanted) && Number(wanted) >= site.images.length)
    throw new Error(`?image=${wanted}: this site has images 0..${site.images.length - 1}`);
  await loadImage(wanted);
}

main().catch(fail);
