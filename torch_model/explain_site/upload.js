// View 7: draw a 28x28 grey image or upload one; with `alexnet explain --serve` the server traces it through
// numpy_ref (POST /api/trace) and it opens like the precomputed images. Bad input gets the server's message.
import { el } from "./draw.js";

export function renderUpload(state) {
  const box = document.getElementById("draw-view");
  const server = { serve: state.serve };
  const message = el("p", { id: "upload-message", "data-state": "idle" });
  const canvas = el("canvas", { id: "draw-canvas", width: "28", height: "28", class: "px big" });
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, 28, 28); };
  clear();
  let drawing = false;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * 28 / r.width, (e.clientY - r.top) * 28 / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; ctx.beginPath(); ctx.moveTo(...at(e)); });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 2.5; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.lineTo(...at(e)); ctx.stroke();
  });
  window.addEventListener("pointerup", () => { drawing = false; });

  const send = async (blob) => {
    message.dataset.state = "busy";
    message.className = "";
    message.textContent = "tracing through numpy_ref ...";
    let reply;
    try {
      const response = await fetch("api/trace", { method: "POST", body: blob,
        headers: { "Content-Type": blob.type || "application/octet-stream" } });
      reply = await response.json();
    } catch (err) {
      reply = { error: `the server did not answer (${err.message})` };
    }
    if (reply.error) {
      message.dataset.state = "error";
      message.className = "error";
      message.textContent = reply.error;
      return;
    }
    message.dataset.state = "done";
    message.textContent = `traced: image ${reply.id}, predicted ${state.site.classes[reply.pred]}`;
    await state.open(reply.id);
  };
  const file = el("input", { type: "file", id: "upload-file", accept: "image/*" });
  const buttons = [
    el("button", { id: "draw-clear", onclick: clear }, "clear"),
    el("button", { id: "draw-send", onclick: () => canvas.toBlob(send, "image/png") }, "trace my drawing"),
    file,
    el("button", { id: "upload-send", onclick: () => file.files[0] ? send(file.files[0]) : null }, "trace the file"),
  ];
  if (!server.serve) {
    buttons.forEach((b) => { b.disabled = true; });
    message.textContent = "Drawing and uploading need the explainer's own server: alexnet explain ... --serve "
      + "(this copy is served as static files).";
  }
  box.replaceChildren(
    el("p", { class: "note", text: "A 28x28 grey image, light object on black like Fashion-MNIST's. The server "
      + "refuses anything else (not an image, not 28x28, over 1 MB) with a message here." }),
    el("div", { class: "row" }, canvas, el("div", {}, ...buttons)), message);
  document.getElementById("draw").dataset.rendered = "1";
}
