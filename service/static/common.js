// What the dashboard's pages share: the API key, calls to the same /v1 API every client uses, table cells,
// files fetched with the key, and how times and durations are written. Plain JavaScript, no build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const keyInput = $("#apikey");
keyInput.value = sessionStorage.getItem("ttsfleet-key") || "";

function headers(extra = {}) {
  const h = { ...extra };
  if (keyInput.value) h.Authorization = "Bearer " + keyInput.value;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((body && body.detail) || response.statusText);
  return body;
}

async function postJson(path, body) {
  return api(path, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
}

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "";
  row.append(td);
  return td;
}

// Each cell carries its column's name, which the phone layout shows beside the value (style.css).
function labelCells(table) {
  const names = [...table.tHead.rows[0].cells].map((th) => th.textContent.trim());
  for (const row of table.tBodies[0].rows) {
    [...row.cells].forEach((td, i) => { if (names[i]) td.dataset.label = names[i]; });
  }
}

// With no key the browser fetches files itself (range requests, streaming); with a key, an <audio> or a
// link cannot send the Authorization header, so the file is fetched once and given as a blob URL.
async function attach(url, elements, attributes) {
  let target = url;
  if (keyInput.value) {
    const response = await fetch(url, { headers: headers() });
    if (!response.ok) return;
    target = URL.createObjectURL(await response.blob());
  }
  elements.forEach((element, i) => element.setAttribute(attributes[i], target));
}

// A file saved under a name the person recognizes (a chapter's title, not its job id). The server names
// files by id, and a response's own file name wins over a link's `download` name, so the file is fetched
// and saved from a blob URL, which has none.
function fileName(title, extension) {
  const safe = (title || "audio").replace(/[\\/:*?"<>|\u0000-\u001f]+/g, "_").trim().slice(0, 120);
  return `${safe || "audio"}.${extension}`;
}

function downloadLink(url, name, text) {
  const link = document.createElement("a");
  link.href = url; link.download = name; link.textContent = text; link.className = "download";
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    const response = await fetch(url, { headers: headers() });
    if (!response.ok) return;
    const saver = document.createElement("a");
    saver.href = URL.createObjectURL(await response.blob());
    saver.download = name;
    document.body.append(saver);
    saver.click();
    saver.remove();
    setTimeout(() => URL.revokeObjectURL(saver.href), 60_000);
  });
  return link;
}

function audioPlayer(url) {
  const audio = document.createElement("audio");
  audio.controls = true; audio.preload = "none";
  attach(url, [audio], ["src"]);
  return audio;
}

// A book's chapters are long (tens of megabytes each): with a key, where the audio must be fetched whole
// before it plays, it is fetched when the person asks to listen, not for every chapter when the page opens.
function lazyPlayer(url) {
  if (!keyInput.value) return audioPlayer(url);  // the browser streams it, with range requests, on play
  const button = document.createElement("button");
  button.type = "button"; button.className = "listen"; button.textContent = "▶ listen";
  button.addEventListener("click", async () => {
    button.disabled = true; button.textContent = "loading…"; button.classList.add("loading");
    const audio = document.createElement("audio");
    audio.controls = true;
    await attach(url, [audio], ["src"]);
    if (!audio.getAttribute("src")) {
      button.disabled = false; button.textContent = "▶ listen"; button.classList.remove("loading");
      return;
    }
    button.replaceWith(audio);
    audio.play().catch(() => {});  // a browser may want another gesture; the controls are there
  });
  return button;
}

function duration(seconds) {
  if (seconds == null) return "";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(iso) ? iso : iso + "Z");
  if (Number.isNaN(date.getTime())) return iso;
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function etaText(item) {
  if (item.status === "queued" || item.status === "running") {
    return item.eta_s == null ? "measuring…" : `${Math.ceil(item.eta_s)} s`;
  }
  return "";
}

function progressBar(done, total) {
  const span = document.createElement("span");
  span.className = "progress";
  const bar = document.createElement("progress");
  bar.max = total || 1; bar.value = done;
  span.append(bar, ` ${done}/${total}`);
  return span;
}

// Warnings: how many and the first; the others when opened.
function warningsView(warnings) {
  if (!warnings || !warnings.length) return "";
  if (warnings.length === 1) {
    const one = document.createElement("span");
    one.className = "warn"; one.textContent = warnings[0];
    return one;
  }
  const details = document.createElement("details");
  details.className = "warn warnings";
  const summary = document.createElement("summary");
  summary.textContent = `${warnings.length} warnings: ${warnings[0]}`;
  const list = document.createElement("ul");
  warnings.slice(1).forEach((w) => { const li = document.createElement("li"); li.textContent = w; list.append(li); });
  details.append(summary, list);
  return details;
}

async function loadVoices() {
  try {
    const voices = await api("/v1/voices");
    document.querySelectorAll("select.voices").forEach((select) => {
      const chosen = select.value;
      select.replaceChildren(new Option("server default", ""),
        ...voices.filter((v) => v.available).map((v) => new Option(v.name, v.name)));
      select.value = chosen;
    });
  } catch (err) { /* the key may be missing still; the default voice is used */ }
}
