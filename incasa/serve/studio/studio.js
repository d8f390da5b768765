// incasa studio: prompt -> n variants (streamed, with previews) -> pick -> paint a mask -> re-inpaint -> gallery.
// Plain JS against the public OpenAI-shaped API; no build step. The painted mask is sent black-and-white
// (white = repaint), which the server accepts beside OpenAI's transparent-pixel masks.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { picked: null, painting: false, gallery: [], partials: 0 };
window.studio = state; // read by the browser test

function headers(extra = {}) {
  const key = $("api-key").value.trim() || localStorage.getItem("incasa-key") || "";
  if (key) localStorage.setItem("incasa-key", key);
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) { showError(await errorText(response)); return; }
  const models = (await response.json()).data.filter((m) => m.kind === "image");
  $("model").replaceChildren(...models.map((m) => new Option(m.id, m.id)));
}

async function errorText(response) {
  try { return (await response.json()).error.message; } catch { return `HTTP ${response.status}`; }
}

// Server-sent events from a fetch body: yields {event, data} objects.
async function* sse(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}

function b64ToBlob(b64, type = "image/png") {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

function variantCard(index) {
  const card = document.createElement("div");
  card.className = "card variant";
  card.innerHTML = `<img alt="variant ${index + 1}"><p class="meta">rendering…</p><button type="button" class="pick" disabled>Pick</button>`;
  return card;
}

// Run one streamed request (generation or edit); fills the variant cards and the gallery.
async function run(url, init, n, steps, partials) {
  showError("");
  $("generate").disabled = $("inpaint").disabled = true;
  $("progress-box").hidden = false;
  const total = n * (partials + 1);
  let done = 0;
  $("progress").max = total; $("progress").value = 0;
  $("status").textContent = `generating ${n} variant(s), ${steps} steps…`;
  const cards = Array.from({ length: n }, (_, i) => variantCard(i));
  $("variants").replaceChildren(...cards);
  try {
    const response = await fetch(url, init);
    if (!response.ok) { showError(await errorText(response)); return; }
    for await (const { event, data } of sse(response)) {
      if (data.error) { showError(data.error.message); return; }
      const card = cards[data.image_index ?? 0];
      const img = card.querySelector("img");
      img.src = `data:image/${data.output_format};base64,${data.b64_json}`;
      done += 1;
      $("progress").value = done;
      if (event.endsWith(".partial_image")) {
        state.partials += 1;
        card.querySelector(".meta").textContent = `preview ${data.partial_image_index + 1}/${partials}`;
        continue;
      }
      const p = data.parameters;
      img.dataset.final = "1";
      card.querySelector(".meta").textContent = `seed ${p.seed}`;
      const item = { b64: data.b64_json, params: p };
      const button = card.querySelector(".pick");
      button.disabled = false;
      button.onclick = () => pick(item, card);
      addToGallery(item);
    }
    $("status").textContent = "done";
  } catch (e) {
    showError(String(e));
  } finally {
    $("generate").disabled = $("inpaint").disabled = false;
  }
}

function addToGallery(item) {
  state.gallery.push(item);
  const url = URL.createObjectURL(b64ToBlob(item.b64));
  const card = document.createElement("div");
  card.className = "card gallery-item";
  const name = `incasa_${item.params.mode}_seed${item.params.seed}.png`;
  card.innerHTML = `<img alt=""><p class="meta"></p><a class="download" download="${name}">Download PNG</a>`;
  card.querySelector("img").src = url;
  card.querySelector(".meta").textContent = `${item.params.mode} · seed ${item.params.seed}`;
  card.querySelector("a").href = url;
  $("gallery").prepend(card);
}

function generate(event) {
  event.preventDefault();
  const n = Number($("n").value) || 1, steps = Number($("steps").value) || 25;
  const body = { prompt: $("prompt").value, model: $("model").value || undefined, n, steps,
                 stream: true, partial_images: 2, response_format: "b64_json", output_format: "png" };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  $("edit-prompt").value = $("prompt").value;
  run("/v1/images/generations",
      { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body) },
      n, steps, 2);
}

// --- the mask editor -------------------------------------------------------------------------------------------

const maskCanvas = $("mask-canvas"), imageCanvas = $("image-canvas");
const mask = document.createElement("canvas"); // what is sent: black = keep, white = repaint
mask.width = mask.height = 512;

function clearMask() {
  const m = mask.getContext("2d");
  m.fillStyle = "#000"; m.fillRect(0, 0, 512, 512);
  maskCanvas.getContext("2d").clearRect(0, 0, 512, 512);
  state.maskPixels = 0;
}

function pick(item, card) {
  document.querySelectorAll(".variant.picked").forEach((c) => c.classList.remove("picked"));
  card.classList.add("picked");
  state.picked = item;
  const img = new Image();
  img.onload = () => imageCanvas.getContext("2d").drawImage(img, 0, 0, 512, 512);
  img.src = `data:image/png;base64,${item.b64}`;
  clearMask();
  $("editor").hidden = false;
}

function paint(event) {
  const rect = maskCanvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * 512 / rect.width, y = (event.clientY - rect.top) * 512 / rect.height;
  const r = Number($("brush").value) / 2;
  for (const [ctx, colour] of [[maskCanvas.getContext("2d"), "rgba(255, 40, 90, 0.45)"], [mask.getContext("2d"), "#fff"]]) {
    ctx.fillStyle = colour; ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill();
  }
  state.maskPixels += 1;
}

maskCanvas.addEventListener("pointerdown", (e) => { state.painting = true; maskCanvas.setPointerCapture(e.pointerId); paint(e); });
maskCanvas.addEventListener("pointermove", (e) => { if (state.painting) paint(e); });
maskCanvas.addEventListener("pointerup", () => { state.painting = false; });

async function inpaint() {
  if (!state.picked) return;
  if (!state.maskPixels) { showError("Paint the region to repaint first."); return; }
  const p = state.picked.params;
  // The image is sent at the size it was delivered; the mask is scaled to match it.
  const picture = await createImageBitmap(b64ToBlob(state.picked.b64));
  const scaled = document.createElement("canvas");
  scaled.width = picture.width; scaled.height = picture.height;
  scaled.getContext("2d").drawImage(mask, 0, 0, picture.width, picture.height);
  const maskBlob = await new Promise((resolve) => scaled.toBlob(resolve, "image/png"));
  const form = new FormData();
  form.append("image", b64ToBlob(state.picked.b64), "image.png");
  form.append("mask", maskBlob, "mask.png");
  form.append("prompt", $("edit-prompt").value || p.prompt);
  form.append("model", $("model").value);
  form.append("n", "1");
  form.append("steps", String(p.steps));
  form.append("seed", String(p.seed + 1000));
  form.append("stream", "true");
  form.append("partial_images", "1");
  await run("/v1/images/edits", { method: "POST", headers: headers(), body: form }, 1, p.steps, 1);
}

$("generate-form").addEventListener("submit", generate);
$("clear-mask").addEventListener("click", clearMask);
$("inpaint").addEventListener("click", inpaint);
$("api-key").value = localStorage.getItem("incasa-key") || "";
$("api-key").addEventListener("change", loadModels);
clearMask();
loadModels();
