// The dashboard: plain JavaScript over the same /v1 API as every client (no build step).
"use strict";

const $ = (sel) => document.querySelector(sel);
const keyInput = $("#apikey");
keyInput.value = sessionStorage.getItem("ttsfleet-key") || "";
keyInput.addEventListener("change", () => {
  sessionStorage.setItem("ttsfleet-key", keyInput.value);
  loadVoices();
  refresh();
});

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

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "";
  row.append(td);
  return td;
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

function eta(job) {
  if (job.status === "queued" || job.status === "running") {
    return job.eta_s == null ? "measuring…" : `${Math.ceil(job.eta_s)} s`;
  }
  return "";
}

// Rows are kept across refreshes so a playing <audio> is not interrupted.
const rows = new Map();

function jobRow(job) {
  let row = rows.get(job.id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.job = job.id;
    rows.set(job.id, row);
  }
  if (row.dataset.status === job.status && job.status !== "running" && job.status !== "queued") return row;
  row.dataset.status = job.status;
  row.replaceChildren();
  cell(row, job.title || job.id).title = job.id;
  cell(row, job.status).className = "status " + job.status;
  const bar = document.createElement("progress");
  bar.max = job.chunks_total || 1; bar.value = job.chunks_done;
  const progress = cell(row, bar);
  progress.append(` ${job.chunks_done}/${job.chunks_total}`);
  cell(row, eta(job)).className = "eta";
  const media = cell(row, "");
  if (job.audio_url) {
    const audio = document.createElement("audio");
    audio.controls = true; audio.preload = "none";
    const link = document.createElement("a");
    link.download = `${job.id}.${job.format}`; link.textContent = "download"; link.className = "download";
    const subs = document.createElement("a");
    subs.download = `${job.id}.srt`; subs.textContent = "subtitles";
    media.append(audio, " ", link, " ", subs);
    attach(job.audio_url, [audio, link], ["src", "href"]);
    attach(job.subtitles_url, [subs], ["href"]);
  } else if (job.error) {
    media.textContent = job.error; media.className = "failed";
  }
  const actions = cell(row, "");
  if (job.status === "queued" || job.status === "running") {
    const button = document.createElement("button");
    button.textContent = "Cancel"; button.className = "cancel";
    button.onclick = async () => { await api(`/v1/jobs/${job.id}`, { method: "DELETE" }); refresh(); };
    actions.append(button);
  }
  return row;
}

async function refreshJobs() {
  const jobs = await api("/v1/jobs?limit=50");
  $("#jobs tbody").replaceChildren(...jobs.map(jobRow));
}

async function refreshWorkers() {
  const workers = await api("/v1/workers");
  $("#workers tbody").replaceChildren(...workers.map((w) => {
    const row = document.createElement("tr");
    [w.id, w.card, w.dtype, w.state, `${Math.round(w.heartbeat_age_s)} s ago`, w.current_job || ""]
      .forEach((value) => cell(row, value));
    return row;
  }));
}

async function refresh() {
  try {
    await Promise.all([refreshJobs(), refreshWorkers()]);
    $("#health").textContent = "";
  } catch (err) {
    $("#health").textContent = err.message;
  }
}

async function loadVoices() {
  try {
    const voices = await api("/v1/voices");
    const select = $("#voice");
    select.replaceChildren(new Option("server default", ""),
      ...voices.filter((v) => v.available).map((v) => new Option(v.name, v.name)));
  } catch (err) { /* the key may be missing still; the default voice is used */ }
}

$("#job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = $("#submit-msg");
  message.textContent = "submitting…";
  const file = $("#file").files[0];
  const fields = { voice: $("#voice").value || null, format: $("#format").value,
                   priority: Number($("#priority").value) };
  let options;
  if (file) {
    const form = new FormData();
    form.append("file", file);
    for (const [k, v] of Object.entries(fields)) if (v !== null) form.append(k, String(v));
    options = { method: "POST", body: form };
  } else {
    options = { method: "POST", body: JSON.stringify({ text: $("#text").value, ...fields }),
                headers: { "Content-Type": "application/json" } };
  }
  try {
    const accepted = await api("/v1/jobs", options);
    message.textContent = `submitted ${accepted.map((j) => j.id).join(", ")}`;
    $("#text").value = ""; $("#file").value = "";
    refresh();
  } catch (err) {
    message.textContent = "error: " + err.message;
  }
});

$("#chart-btn").addEventListener("click", async () => {
  const response = await fetch("/v1/stats/chart.png", { headers: headers() });
  if (!response.ok) return;
  const img = $("#chart");
  img.src = URL.createObjectURL(await response.blob());
  img.hidden = false;
});

loadVoices();
refresh();
setInterval(refresh, 1000);
