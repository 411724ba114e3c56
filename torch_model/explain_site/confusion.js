// View 6: the confusion matrix of the test images the builder classified (numpy_ref), and the run's own (its
// evaluation.json, when the checkpoint's folder has one); a cell lists its images, the precomputed ones open here.
import { el } from "./draw.js";

export function renderConfusion(state) {
  const box = document.getElementById("confusion-view");
  const { site } = state;
  const parts = [
    el("p", { text: `numpy_ref's predictions for the first ${site.scan.count} test images (accuracy ${(100 * site.scan.accuracy).toFixed(1)}%), rows: true class, columns: predicted. Click a cell for its images.` }),
    matrix(state, site.scan.confusion, "scan"),
    el("div", { id: "cell-images" }),
  ];
  const ev = site.run_evaluation;
  if (ev && Array.isArray(ev.confusion)) {
    parts.push(el("p", { text: `The run's own evaluation (evaluation.json beside the checkpoint: ${ev.images} test images, accuracy ${(100 * ev.accuracy).toFixed(1)}%, torch's forward):` }),
      matrix(state, ev.confusion, "run"));
  }
  box.replaceChildren(...parts);
  document.getElementById("confusion").dataset.rendered = "1";
}

function matrix(state, M, kind) {
  const classes = state.site.classes;
  const table = el("table", { class: "confusion", "data-kind": kind });
  table.append(el("tr", {}, el("th", { text: "true \\ predicted" }), ...classes.map((c) => el("th", { text: c.slice(0, 7) }))));
  const max = Math.max(...M.flat());
  M.forEach((row, i) => {
    table.append(el("tr", {}, el("th", { text: classes[i] }), ...row.map((v, j) => {
      const shade = Math.round(255 - 200 * Math.sqrt(v / (max || 1)));
      const td = el("td", { class: i === j ? "diag" : v ? "link" : "", text: String(v),
        style: `background: rgb(${shade}, ${shade}, 255)`, "data-true": String(i), "data-pred": String(j),
        onclick: () => showCell(state, i, j) });
      return td;
    })));
  });
  return table;
}

function showCell(state, t, p) {
  const { site } = state;
  const box = document.getElementById("cell-images");
  const pre = site.images.map((im, k) => ({ ...im, k })).filter((im) => im.label === t && im.pred === p);
  const scanned = [];
  site.scan.labels.forEach((l, i) => { if (l === t && site.scan.preds[i] === p) scanned.push(i); });
  const precomputed = new Set(pre.map((im) => im.index));
  box.replaceChildren(
    el("h3", { text: `true ${site.classes[t]}, predicted ${site.classes[p]}` }),
    pre.length ? el("ul", {}, ...pre.map((im) => el("li", {},
      el("a", { href: `?image=${im.k}`, onclick: (e) => { e.preventDefault(); state.open(String(im.k)); } },
        `test #${im.index} (image ${im.k}): open it in the explainer`))))
      : el("p", { text: "none of these was precomputed (alexnet explain --images N precomputes more)" }),
    el("p", { class: "note", text: `test images of this cell among the scanned ones: ${scanned.slice(0, 40).map((i) => "#" + i + (precomputed.has(i) ? "*" : "")).join(", ")}${scanned.length > 40 ? ", ..." : ""}${pre.length ? " (* precomputed)" : ""}` }));
}
