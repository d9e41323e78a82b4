// The web page: a thin client of POST /v1/images/generations with stream=true.
// Partial decodes (rows sampled so far) replace each image as they arrive over server-sent
// events; the completed event gives the final PNG and a download link. Settings left empty
// are not sent, so the model's own defaults apply.
"use strict";

const $ = (id) => document.getElementById(id);
const PARTIAL_IMAGES = 8;
let model = null;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// The API key (when the server asks for one) lives in sessionStorage, sent as a Bearer token.
function headers(extra = {}) {
  const key = sessionStorage.getItem("simplear-api-key");
  return key ? { ...extra, Authorization: "Bearer " + key } : extra;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    if (r.status === 401) {
      $("keybox").hidden = false;
      setStatus("Enter the API key to use this server.", true);
      return;
    }
    const body = await r.json();
    model = body.data[0];
  } catch (err) {
    setStatus("Could not reach the server: " + err, true);
    return;
  }
  $("keybox").hidden = true;
  setStatus("");
  $("size").replaceChildren();
  $("sampler").replaceChildren();
  $("model").textContent = "model: " + model.id;
  for (const size of model.sizes) {
    const opt = new Option(size, size, size === model.default_size, size === model.default_size);
    $("size").add(opt);
  }
  for (const name of model.samplers) $("sampler").add(new Option(name, name, name === "ar", name === "ar"));
  $("n").max = model.max_n;
  const defaults = model.sampling || {};
  for (const key of ["cfg_scale", "temperature", "top_k", "top_p"]) {
    if (defaults[key] !== null && defaults[key] !== undefined) $(key).placeholder = String(defaults[key]);
  }
  if (model.max_prompt_chars) $("prompt").maxLength = model.max_prompt_chars;
}

function requestBody() {
  const body = { prompt: $("prompt").value, stream: true, partial_images: PARTIAL_IMAGES };
  const ints = ["n", "seed", "top_k"];
  const floats = ["cfg_scale", "temperature", "top_p"];
  for (const key of ints) if ($(key).value !== "") body[key] = parseInt($(key).value, 10);
  for (const key of floats) if ($(key).value !== "") body[key] = parseFloat($(key).value);
  if ($("size").value) body.size = $("size").value;
  if ($("sampler").value) body.sampler = $("sampler").value;
  if ($("negative_prompt").value.trim() !== "") body.negative_prompt = $("negative_prompt").value;
  return body;
}

function makeFigures(count) {
  $("results").replaceChildren();
  const figures = [];
  for (let i = 0; i < count; i++) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = "image " + (i + 1) + " (sampling…)";
    img.dataset.index = String(i);
    const caption = document.createElement("figcaption");
    caption.textContent = "waiting…";
    fig.append(img, caption);
    $("results").append(fig);
    figures.push({ img, caption });
  }
  return figures;
}

function showEvent(figures, type, data) {
  const fig = figures[data.index || 0];
  if (!fig) return;
  const src = "data:image/" + (data.output_format || "png") + ";base64," + data.b64_json;
  if (type === "image_generation.partial_image") {
    fig.img.src = src;
    fig.img.dataset.partials = String(Number(fig.img.dataset.partials || 0) + 1);
    fig.caption.textContent = "rows " + data.rows_done + " / " + data.rows_total;
  } else if (type === "image_generation.completed") {
    fig.img.src = src;
    fig.img.classList.add("final");
    fig.img.alt = $("prompt").value + " (seed " + data.seed + ")";
    const link = document.createElement("a");
    link.href = src;
    link.download = "simplear-" + data.seed + "." + (data.output_format || "png");
    link.textContent = "download (seed " + data.seed + ")";
    fig.caption.replaceChildren(link);
  }
}

// Server-sent events over fetch (EventSource cannot POST): blocks separated by a blank line.
async function readEvents(response, onEvent) {
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
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(event, JSON.parse(data));
    }
  }
}

async function generate(event) {
  event.preventDefault();
  const body = requestBody();
  if (!body.prompt.trim()) {
    setStatus("Type a prompt first.", true);
    return;
  }
  $("generate").disabled = true;
  setStatus("Generating…");
  const figures = makeFigures(body.n || 1);
  const started = performance.now();
  try {
    const response = await fetch("/v1/images/generations", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).error.message; } catch (_) { /* keep the status line */ }
      setStatus(message, true);
      $("results").replaceChildren();
      return;
    }
    let failed = false;
    await readEvents(response, (type, data) => {
      if (type === "error") {
        failed = true;
        setStatus(data.error ? data.error.message : "generation failed", true);
      } else {
        showEvent(figures, type, data);
      }
    });
    if (!failed) setStatus("Done in " + ((performance.now() - started) / 1000).toFixed(1) + " s.");
  } catch (err) {
    setStatus("Request failed: " + err, true);
  } finally {
    $("generate").disabled = false;
  }
}

$("form").addEventListener("submit", generate);
$("keybox").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("simplear-api-key", $("apikey").value.trim());
  loadModel();
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("form").requestSubmit();
});
loadModel();
