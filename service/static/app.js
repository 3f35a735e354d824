// The dashboard: jobs (paged), the fleet, the chart and the job form, over the same /v1 API as every client.
"use strict";

// Jobs a page: 20, or `?jobs=N` in the page's address (1 to 100).
const PAGE_SIZE = Math.min(100, Math.max(1, Number(new URLSearchParams(location.search).get("jobs")) || 20));
let jobsOffset = 0;

keyInput.addEventListener("change", () => {
  sessionStorage.setItem("ttsfleet-key", keyInput.value);
  loadVoices();
  refresh();
});

// Rows are kept across refreshes so a playing <audio> is not interrupted.
const rows = new Map();

function jobRow(job) {
  let row = rows.get(job.id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.job = job.id;
    rows.set(job.id, row);
  }
  const active = job.status === "running" || job.status === "queued";
  if (row.dataset.status === job.status && !active) return row;
  row.dataset.status = job.status;
  row.replaceChildren();
  const name = cell(row, job.title || job.id);
  name.title = job.id; name.className = "name";
  cell(row, job.status).className = "status " + job.status;
  cell(row, progressBar(job.chunks_done, job.chunks_total));
  cell(row, job.voice).className = "voice";
  const times = cell(row, when(job.created_at));
  times.className = "time";
  if (job.finished_at) times.append(document.createElement("br"), `→ ${when(job.finished_at)}`);
  cell(row, duration(job.audio_s));
  cell(row, warningsView(job.warnings));
  cell(row, etaText(job)).className = "eta";
  const media = cell(row, "");
  if (job.audio_url) {
    const audio = audioPlayer(job.audio_url);
    const link = downloadLink(job.audio_url, fileName(job.title || job.id, job.format), "download");
    const subs = downloadLink(job.subtitles_url, fileName(job.title || job.id, "srt"), "subtitles");
    subs.className = "subtitles";
    media.append(audio, " ", link, " ", subs);
  } else if (job.error) {
    media.textContent = job.error; media.className = "failed";
  }
  const actions = cell(row, "");
  if (active) {
    const button = document.createElement("button");
    button.textContent = "Cancel"; button.className = "cancel";
    button.onclick = async () => { await api(`/v1/jobs/${job.id}`, { method: "DELETE" }); refresh(); };
    actions.append(button);
  }
  return row;
}

async function refreshJobs() {
  // One more than a page: whether there is an older page is known without counting every job.
  const jobs = await api(`/v1/jobs?limit=${PAGE_SIZE + 1}&offset=${jobsOffset}`);
  const table = $("#jobs");
  table.tBodies[0].replaceChildren(...jobs.slice(0, PAGE_SIZE).map(jobRow));
  labelCells(table);
  $("#jobs-next").disabled = jobs.length <= PAGE_SIZE;
  $("#jobs-prev").disabled = jobsOffset === 0;
  $("#jobs-page").textContent = `page ${jobsOffset / PAGE_SIZE + 1}`;
}

async function refreshWorkers() {
  const workers = await api("/v1/workers");
  const table = $("#workers");
  table.tBodies[0].replaceChildren(...workers.map((w) => {
    const row = document.createElement("tr");
    [w.id, w.card, w.dtype, w.state, `${Math.round(w.heartbeat_age_s)} s ago`, w.current_job || ""]
      .forEach((value) => cell(row, value));
    return row;
  }));
  labelCells(table);
}

async function refresh() {
  try {
    await Promise.all([refreshJobs(), refreshWorkers(), refreshBooks()]);
    $("#health").textContent = "";
  } catch (err) {
    $("#health").textContent = err.message;
  }
}

$("#jobs-prev").addEventListener("click", () => { jobsOffset = Math.max(0, jobsOffset - PAGE_SIZE); refresh(); });
$("#jobs-next").addEventListener("click", () => { jobsOffset += PAGE_SIZE; refresh(); });

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
    jobsOffset = 0;
    refresh();
  } catch (err) {
    message.textContent = "error: " + err.message;
  }
});

// The chart is drawn from every job's figures, which takes a moment: say so, and say what went wrong.
$("#chart-btn").addEventListener("click", async () => {
  const button = $("#chart-btn"), status = $("#chart-status"), img = $("#chart");
  button.disabled = true; status.textContent = "drawing the chart…"; status.className = "muted loading";
  try {
    const response = await fetch("/v1/stats/chart.png", { headers: headers() });
    if (!response.ok) throw new Error((await response.json().catch(() => ({}))).detail || response.statusText);
    img.src = URL.createObjectURL(await response.blob());
    await img.decode();
    img.hidden = false; status.textContent = ""; status.className = "muted";
  } catch (err) {
    status.textContent = "no chart: " + err.message; status.className = "failed";
  } finally {
    button.disabled = false;
  }
});

loadVoices();
refresh();
setInterval(refresh, 1000);
