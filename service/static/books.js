// Books: upload an EPUB/PDF and see its chapters before anything is made, pick chapters and a voice, follow
// each chapter, listen while the rest is made, download the .m4b and each chapter by its title, and fix a
// word's pronunciation once for the whole book.
"use strict";

let openBookId = null;
const chapterRows = new Map();  // kept across polls, so a playing chapter is not interrupted

// "1-3,7" from [1, 2, 3, 7]: the chapter numbers the preview listed, as --chapters takes them.
function chapterSpec(numbers) {
  const parts = [];
  for (let i = 0; i < numbers.length; i++) {
    let j = i;
    while (j + 1 < numbers.length && numbers[j + 1] === numbers[j] + 1) j++;
    parts.push(j > i ? `${numbers[i]}-${numbers[j]}` : String(numbers[i]));
    i = j;
  }
  return parts.join(",");
}

function chosenChapters() {
  return [...document.querySelectorAll("#book-chapters tbody input:checked")].map((box) => Number(box.value));
}

$("#book-file").addEventListener("change", async () => {
  const file = $("#book-file").files[0];
  const reading = $("#book-reading");
  $("#book-preview").hidden = true;
  $("#book-msg").textContent = "";
  if (!file) return;
  reading.textContent = "reading the book…"; reading.className = "muted loading";
  const form = new FormData();
  form.append("file", file);
  try {
    showPreview(await api("/v1/books/preview", { method: "POST", body: form }));
    reading.textContent = ""; reading.className = "muted";
  } catch (err) {
    reading.textContent = "error: " + err.message; reading.className = "failed";
  }
});

function showPreview(preview) {
  $("#book-preview-title").textContent = preview.title || "(untitled)";
  $("#book-preview-author").textContent = [preview.author, preview.language,
                                          preview.has_cover ? "with cover" : "no cover"].filter(Boolean).join(" · ");
  $("#book-preview-warnings").replaceChildren(warningsView(preview.warnings));
  const table = $("#book-chapters");
  table.tBodies[0].replaceChildren(...preview.chapters.map((chapter) => {
    const row = document.createElement("tr");
    const box = document.createElement("input");
    box.type = "checkbox"; box.value = chapter.index; box.checked = !chapter.skipped;
    box.setAttribute("aria-label", `chapter ${chapter.index}`);
    box.dataset.default = box.checked ? "1" : "";
    cell(row, box);
    cell(row, String(chapter.index));
    cell(row, chapter.title || "").className = "name";
    cell(row, chapter.chars.toLocaleString());
    cell(row, chapter.skipped || "").className = "muted";
    if (chapter.skipped) row.className = "skipped";
    return row;
  }));
  labelCells(table);
  $("#book-all").checked = true;
  $("#book-preview").hidden = false;
}

$("#book-all").addEventListener("change", () => {
  document.querySelectorAll("#book-chapters tbody input").forEach((box) => {
    box.checked = $("#book-all").checked;
  });
});

$("#book-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("#book-file").files[0], message = $("#book-msg");
  const chosen = chosenChapters();
  if (!file || !chosen.length) { message.textContent = "choose a book and at least one chapter"; return; }
  const form = new FormData();
  form.append("file", file);
  if ($("#book-voice").value) form.append("voice", $("#book-voice").value);
  form.append("format", $("#book-format").value);
  // Only when the person changed the choice: the server's default skips front and back matter itself.
  const boxes = [...document.querySelectorAll("#book-chapters tbody input")];
  if (boxes.some((box) => box.checked !== (box.dataset.default === "1"))) form.append("chapters", chapterSpec(chosen));
  message.textContent = "starting…";
  try {
    const book = await api("/v1/books", { method: "POST", body: form });
    message.textContent = `started ${book.title || book.id}: ${book.chapters_total} chapters`;
    $("#book-preview").hidden = true; $("#book-file").value = "";
    openBook(book.id, book);
  } catch (err) {
    message.textContent = "error: " + err.message;
  }
});

async function refreshBooks() {
  let listed;
  try {
    listed = await api("/v1/books?limit=20");
  } catch (err) {
    return;  // a server without books answers 404: the section stays empty
  }
  const table = $("#books");
  table.tBodies[0].replaceChildren(...listed.books.map((book) => {
    const row = document.createElement("tr");
    row.dataset.book = book.id;
    const open = document.createElement("button");
    open.type = "button"; open.className = "link"; open.textContent = book.title || book.id;
    open.onclick = () => openBook(book.id);
    cell(row, open).className = "name";
    cell(row, book.status).className = "status " + book.status;
    cell(row, `${book.chapters_done}/${book.chapters_total}`);
    cell(row, progressBar(book.chunks_done, book.chunks_total));
    cell(row, etaText(book)).className = "eta";
    cell(row, book.m4b_url ? downloadLink(book.m4b_url, fileName(book.title || book.id, "m4b"), ".m4b") : "");
    return row;
  }));
  labelCells(table);
  table.hidden = !listed.books.length;
  $("#books-none").hidden = Boolean(listed.books.length);
  if (openBookId) await refreshBook();
}

function openBook(bookId, detail) {
  if (openBookId !== bookId) {
    chapterRows.clear();
    $("#book-chapter-table tbody").replaceChildren();
    $("#pron-chapter").replaceChildren();
    $("#pron-text").replaceChildren();
    $("#pron-msg").textContent = "";
    $("#book-cover").hidden = true;
    $("#book-m4b").replaceChildren();
  }
  openBookId = bookId;
  $("#book").hidden = false;
  if (detail) showBook(detail); else refreshBook();
  $("#book").scrollIntoView({ behavior: "smooth", block: "start" });
}

$("#book-close").addEventListener("click", () => { openBookId = null; $("#book").hidden = true; });

$("#book-cancel").addEventListener("click", async () => {
  if (!openBookId) return;
  showBook(await api(`/v1/books/${openBookId}`, { method: "DELETE" }));
});

async function refreshBook() {
  const bookId = openBookId;
  try {
    const book = await api(`/v1/books/${bookId}`);
    if (bookId === openBookId) showBook(book);
  } catch (err) {
    $("#book-warnings").textContent = "error: " + err.message;
  }
}

function showBook(book) {
  $("#book").dataset.book = book.id;
  $("#book-title").textContent = book.title || book.id;
  $("#book-author").textContent = [book.author, book.language].filter(Boolean).join(" · ");
  const status = $("#book-status");
  status.textContent = book.status; status.className = "status " + book.status;
  $("#book-progress").max = book.chunks_total || 1; $("#book-progress").value = book.chunks_done;
  $("#book-count").textContent = `${book.chapters_done}/${book.chapters_total} chapters, ` +
    `${book.chunks_done}/${book.chunks_total} chunks` + (book.audio_s ? `, ${duration(book.audio_s)}` : "");
  $("#book-eta").textContent = etaText(book) && `ETA ${etaText(book)}`;
  $("#book-cancel").hidden = !(book.status === "queued" || book.status === "running");
  $("#book-warnings").replaceChildren(warningsView(book.warnings));
  const cover = $("#book-cover");
  if (book.cover_url && cover.hidden) { cover.hidden = false; attach(book.cover_url, [cover], ["src"]); }
  const m4b = $("#book-m4b");
  if (book.m4b_url && m4b.dataset.url !== book.m4b_url + book.finished_at) {
    m4b.dataset.url = book.m4b_url + book.finished_at;
    m4b.replaceChildren(downloadLink(book.m4b_url, fileName(book.title || book.id, "m4b"), "download .m4b"));
  } else if (!book.m4b_url) {
    m4b.dataset.url = ""; m4b.replaceChildren();
  }
  const table = $("#book-chapter-table");
  table.tBodies[0].replaceChildren(...(book.chapters || []).map(chapterRow));
  labelCells(table);
  chapterChoices(book.chapters || []);
}

function chapterRow(chapter) {
  let row = chapterRows.get(chapter.job_id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.job = chapter.job_id;
    chapterRows.set(chapter.job_id, row);
  }
  const state = `${chapter.status}:${chapter.chunks_done}:${chapter.audio_url}`;
  if (row.dataset.state === state) return row;
  row.dataset.state = state; row.dataset.status = chapter.status;
  row.replaceChildren();
  cell(row, String(chapter.index));
  cell(row, chapter.title || chapter.job_id).className = "name";
  cell(row, chapter.status).className = "status " + chapter.status;
  cell(row, progressBar(chapter.chunks_done, chapter.chunks_total));
  const media = cell(row, "");
  if (chapter.audio_url && chapter.status === "succeeded") {
    const extension = chapter.audio_url.split("?")[0].split(".").pop();
    media.append(lazyPlayer(chapter.audio_url), " ",
                 downloadLink(chapter.audio_url, fileName(chapter.title || chapter.job_id,
                                                          /^(wav|flac|ogg)$/.test(extension) ? extension : "wav"),
                              "download"));
  }
  cell(row, warningsView(chapter.warnings));
  return row;
}

// The chapters whose text can be shown; the first finished one is chosen to start with.
function chapterChoices(chapters) {
  const select = $("#pron-chapter");
  const wanted = chapters.map((c) => `${c.job_id}|${c.index}. ${c.title || c.job_id}`).join("\n");
  if (select.dataset.list === wanted) return;
  select.dataset.list = wanted;
  const chosen = select.value;
  select.replaceChildren(...chapters.map((c) => new Option(`${c.index}. ${c.title || c.job_id}`, c.job_id)));
  // The first finished chapter past the book's title line (chapter 0) has words worth fixing.
  const first = chapters.find((c) => c.status === "succeeded" && c.index > 0) || chapters[0] || {};
  select.value = chosen || first.job_id || "";
  if (select.value !== chosen) showChapterText();
}

async function showChapterText() {
  const jobId = $("#pron-chapter").value, box = $("#pron-text");
  if (!jobId) return;
  box.textContent = "loading the chapter's text…"; box.classList.add("loading");
  try {
    const chapter = await api(`/v1/jobs/${jobId}/text`);
    box.textContent = chapter.text; box.dataset.job = jobId;
  } catch (err) {
    box.textContent = "error: " + err.message;
  } finally {
    box.classList.remove("loading");
  }
}

$("#pron-chapter").addEventListener("change", showChapterText);

// A word selected in the chapter's text becomes the word to fix (double-click on a desktop, press and hold
// on a phone: both select a word).
document.addEventListener("selectionchange", () => {
  const selection = document.getSelection();
  if (!selection || selection.isCollapsed || !$("#pron-text").contains(selection.anchorNode)) return;
  const word = selection.toString().trim().replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, "");
  if (word && word.length <= 100 && !/\s{2,}|\n/.test(word)) $("#pron-word").value = word;
});

function entry() {
  const word = $("#pron-word").value.trim(), say = $("#pron-say").value.trim();
  if (!word || !say) throw new Error("select a word in the text and say how it is said");
  return { word, say };
}

$("#pron-preview").addEventListener("click", async () => {
  const message = $("#pron-msg"), button = $("#pron-preview"), audio = $("#pron-audio");
  try {
    const body = { ...entry(), job_id: $("#pron-chapter").value };
    button.disabled = true; message.textContent = "making the sentence…"; message.className = "muted loading";
    const response = await fetch(`/v1/books/${openBookId}/pronunciations/preview`, {
      method: "POST", body: JSON.stringify(body), headers: headers({ "Content-Type": "application/json" }) });
    if (!response.ok) throw new Error((await response.json().catch(() => ({}))).detail || response.statusText);
    audio.src = URL.createObjectURL(await response.blob());
    audio.hidden = false;
    message.textContent = `the first sentence with “${body.word}”, said with “${body.say}”`;
    message.className = "muted";
    audio.play().catch(() => {});  // a browser may want a gesture first; the controls are there
  } catch (err) {
    message.textContent = "error: " + err.message; message.className = "failed";
  } finally {
    button.disabled = false;
  }
});

$("#pron-apply").addEventListener("click", async () => {
  const message = $("#pron-msg"), button = $("#pron-apply");
  try {
    const body = entry();
    button.disabled = true; message.textContent = "applying…"; message.className = "muted loading";
    const done = await postJson(`/v1/books/${openBookId}/pronunciations`, body);
    message.textContent = done.chunks
      ? `“${body.word}” is now said “${body.say}”: ${done.chunks} chunks in ${done.jobs} ` +
        `chapter${done.jobs === 1 ? "" : "s"} are being made again, then the .m4b`
      : `“${body.word}” is now said “${body.say}”; no finished chapter says it, nothing to make again`;
    message.className = "muted applied";
    refreshBook();
  } catch (err) {
    message.textContent = "error: " + err.message; message.className = "failed";
  } finally {
    button.disabled = false;
  }
});
