// VLQ web UI: one image starts a conversation (POST /v1/chat/completions, the whole conversation on every
// turn), with an extraction preset a job (POST /v1/jobs) whose grounded fields are drawn over the image, one
// document (PDF, TIFF, HEIC) is a job shown page by page (its fields, with an extraction preset, drawn over its
// pages); several files run as a native batch (POST /v1/batches), polled until it ends. Only the public API is used.

import { renderFields } from "./fields.js";

const CONFIG = JSON.parse(document.getElementById("vlq-config").textContent);
const ACCEPTED_TYPES = {
  "image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP",
  "application/pdf": "PDF", "image/tiff": "TIFF", "image/heic": "HEIC", "image/heif": "HEIF",
};
const EXTENSION_TYPES = {
  jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", webp: "image/webp",
  pdf: "application/pdf", tif: "image/tiff", tiff: "image/tiff", heic: "image/heic", heif: "image/heif",
};
// Read page by page on the server; a browser cannot show them in <img> (their pages come back as PNG).
const DOCUMENT_TYPES = new Set(["application/pdf", "image/tiff", "image/heic", "image/heif"]);
// What an <img> shows: a job's own image of another type is shown through its first page instead.
const SHOWN_TYPES = new Set(["image/jpeg", "image/png", "image/webp"]);
const BATCH_ENDINGS = new Set(["completed", "failed", "cancelled", "expired"]);
const JOB_ENDINGS = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1000;

const $ = (id) => document.getElementById(id);
const el = {
  form: $("compose-form"), dropzone: $("dropzone"), fileInput: $("file-input"), fileErrors: $("file-errors"),
  stagedBlock: $("staged-block"), staged: $("staged"), stagedCount: $("staged-count"), clearStaged: $("clear-staged"),
  preset: $("preset"), presetHint: $("preset-hint"), prompt: $("prompt"), model: $("model"), maxTokens: $("max-tokens"),
  temperature: $("temperature"), documentOptions: $("document-options"), pages: $("pages"), pageMode: $("page-mode"),
  pagesHint: $("pages-hint"),
  composeError: $("compose-error"), submit: $("submit"), recent: $("recent-batches"), status: $("service-status"),
  tabChat: $("tab-chat"), tabBatch: $("tab-batch"), chatView: $("chat-view"), batchView: $("batch-view"),
  chatEmpty: $("chat-empty"), chatHead: $("chat-head"), chatTitle: $("chat-title"), newChat: $("new-chat"), messages: $("messages"),
  replyForm: $("reply-form"), reply: $("reply"), replySend: $("reply-send"),
  batchEmpty: $("batch-empty"), batchBody: $("batch-body"), batchId: $("batch-id"), batchStatus: $("batch-status"),
  progress: $("batch-progress"), downloadCsv: $("download-csv"), downloadJsonl: $("download-jsonl"),
  cancelBatch: $("cancel-batch"), batchError: $("batch-error"), batchWarning: $("batch-warning"),
  resultsBody: $("results-body"),
};

const state = {
  staged: [],         // [{file, url}] images waiting to be sent
  presets: new Map(), // name -> preset from GET /v1/presets
  busy: false,        // a request is in flight: every submit is blocked until it ends
  chat: null,         // {image: {url, dataUrl, name}, messages: [...the API conversation so far], options}
  batch: null,        // {id, timer, rows: Map(job_id -> <tr>), done}
  modelChosen: false, // the user (or a preset) picked the model: status refreshes no longer change it
};

// -- API -----------------------------------------------------------------------------------------

class ApiFailure extends Error {
  // retryable: asking again may work (the server was busy or unreachable, or failed); a bad request will not.
  constructor(message, { retryable = false } = {}) {
    super(message);
    this.retryable = retryable;
  }
}

function retryableStatus(status) {
  return status >= 500 || status === 429 || status === 408;
}

// With auth on, the page acts with the API key typed into the header's field (kept in this browser only).
const KEY_STORAGE = "vlq-api-key";

function authHeaders() {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function send(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...authHeaders(), ...options.headers } });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiFailure("The server could not be reached. Check that VLQ is running.", { retryable: true });
  }
  if (!response.ok) {
    // VLQ's errors and the OpenAI-shaped ones of /v1/chat/completions both carry error.message.
    const body = await response.json().catch(() => null);
    throw new ApiFailure(body?.error?.message || `The server answered ${response.status} ${response.statusText}.`,
                         { retryable: retryableStatus(response.status) });
  }
  return response;
}

async function api(path, options = {}) {
  return (await send(path, options)).json();
}

async function* serverSentEvents(response) {
  // The `data:` payloads of an event stream, parsed as JSON, until `data: [DONE]`.
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new ApiFailure("The answer was cut off: the connection closed early.", { retryable: true });
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

// -- choosing images -----------------------------------------------------------------------------

function fileType(file) {
  if (file.type) return file.type;
  return EXTENSION_TYPES[file.name.split(".").pop().toLowerCase()] || "";
}

function formatBytes(bytes) {
  return bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} KB`;
}

function checkFile(file) {
  if (!ACCEPTED_TYPES[fileType(file)]) return `${file.name}: not a JPEG, PNG, WebP, PDF, TIFF or HEIC file.`;
  if (file.size > CONFIG.maxImageBytes) {
    return `${file.name} is ${formatBytes(file.size)}; the limit is ${formatBytes(CONFIG.maxImageBytes)} per image.`;
  }
  if (file.size === 0) return `${file.name} is empty.`;
  return null;
}

function addFiles(files) {
  el.fileErrors.replaceChildren();
  for (const file of files) {
    const problem = checkFile(file);
    if (problem) {
      el.fileErrors.append(Object.assign(document.createElement("li"), { textContent: problem }));
      continue;
    }
    if (state.staged.some((s) => s.file.name === file.name && s.file.size === file.size)) continue;
    state.staged.push({ file, url: URL.createObjectURL(file) });
  }
  renderStaged();
}

function removeStaged(index) {
  URL.revokeObjectURL(state.staged[index].url);
  state.staged.splice(index, 1);
  renderStaged();
}

function clearStaged({ keepUrls = false } = {}) {
  if (!keepUrls) state.staged.forEach((s) => URL.revokeObjectURL(s.url));
  state.staged = [];
  el.fileErrors.replaceChildren();
  renderStaged();
}

function renderStaged() {
  el.staged.replaceChildren(...state.staged.map(({ file, url }, index) => {
    const item = document.createElement("li");
    const image = isDocument(file)
      ? Object.assign(document.createElement("div"), { className: "doc", textContent: ACCEPTED_TYPES[fileType(file)] })
      : Object.assign(document.createElement("img"), { src: url, alt: "" });
    const name = Object.assign(document.createElement("span"), { className: "name", textContent: file.name });
    name.title = `${file.name} (${formatBytes(file.size)})`;
    const remove = Object.assign(document.createElement("button"), { type: "button", className: "remove" });
    remove.setAttribute("aria-label", `Remove ${file.name}`);
    remove.innerHTML = '<svg class="icon" aria-hidden="true"><use href="#i-close"/></svg>';
    remove.addEventListener("click", () => removeStaged(index));
    item.append(image, name, remove);
    return item;
  }));
  const count = state.staged.length;
  el.stagedBlock.hidden = count === 0;
  const documents = state.staged.some(({ file }) => isDocument(file));
  el.stagedCount.textContent = count > 1 ? `${count} files: a batch`
    : documents ? "1 document: read page by page" : "1 image: a conversation";
  el.documentOptions.hidden = el.pagesHint.hidden = !documents;
  renderSubmit();
}

function isDocument(file) {
  return DOCUMENT_TYPES.has(fileType(file));
}

function renderSubmit() {
  const count = state.staged.length;
  el.submit.disabled = state.busy || count === 0;
  el.submit.textContent = state.busy ? "Thinking…"
    : count === 0 ? "Add an image to start"
    : count === 1 ? (isDocument(state.staged[0].file) ? "Ask about this document" : "Ask about this image")
    : `Run batch of ${count} files`;
}

function setupDropzone() {
  el.fileInput.addEventListener("change", () => {
    addFiles([...el.fileInput.files]);
    el.fileInput.value = ""; // choosing the same file again fires `change` again
  });
  let depth = 0; // dragenter/dragleave fire for every child element crossed
  el.dropzone.addEventListener("dragenter", (event) => { event.preventDefault(); depth += 1; el.dropzone.classList.add("dragging"); });
  el.dropzone.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) el.dropzone.classList.remove("dragging"); });
  el.dropzone.addEventListener("dragover", (event) => event.preventDefault());
  el.dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    el.dropzone.classList.remove("dragging");
    addFiles([...event.dataTransfer.files]);
  });
  // A file dropped beside the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (files.length) addFiles(files);
  });
  el.clearStaged.addEventListener("click", () => clearStaged());
}

// -- presets and models --------------------------------------------------------------------------

async function loadPresets() {
  try {
    const { data } = await api("/v1/presets");
    for (const preset of data) {
      state.presets.set(preset.name, preset);
      el.preset.append(new Option(preset.name, preset.name));
    }
  } catch (error) {
    el.presetHint.hidden = false;
    el.presetHint.textContent = `Presets are unavailable: ${error.message}`;
  }
}

function onPresetChange() {
  const preset = state.presets.get(el.preset.value);
  el.presetHint.hidden = !preset;
  if (!preset) return;
  el.prompt.value = preset.prompt;
  if (preset.model) {
    el.model.value = preset.model;
    state.modelChosen = true;
  }
  const output = preset.labels.length ? `one of: ${preset.labels.join(", ")}`
    : preset.schema ? `JSON with ${Object.keys(preset.schema.properties || {}).join(", ")}` : "text";
  el.presetHint.textContent = `Model: ${preset.model || CONFIG.defaultModel}. Output: ${output}.`;
}

async function refreshStatus() {
  // Workers and live models are shown to callers with a key; without one (or with a wrong one) only the status.
  let body;
  try {
    let response = await fetch("/readyz", { headers: authHeaders() });
    if (response.status === 401 || response.status === 429) response = await fetch("/readyz");
    body = await response.json();
  } catch {
    setStatus("down", "Server unreachable");
    return;
  }
  const workers = body.workers?.length || 0;
  if (body.status === "ready") {
    setStatus("ready", body.workers ? `Ready: ${workers} worker${workers === 1 ? "" : "s"}` : "Ready");
  } else {
    setStatus("not_ready", `Not ready: no ${body.missing?.join(", ") || "worker"}`);
  }
  if (!body.models) return;
  markModels(new Set(body.models), new Map((body.unserved || []).map((item) => [item.model, item])));
}

// A model no live worker serves says why in its label (and what fixes it in its tooltip). Until the user picks a
// model, a live one is selected: the default if it is live, else the first live vision-language model.
const UNSERVED_LABELS = { no_worker: "no worker", model_loading: "loading", model_unavailable: "unavailable" };

function markModels(live, unserved) {
  for (const option of el.model.options) {
    const notice = live.has(option.value) ? null : unserved.get(option.value);
    const label = live.has(option.value) ? "" : UNSERVED_LABELS[notice?.code] || "no worker";
    option.textContent = label ? `${option.value} (${label})` : option.value;
    option.title = notice?.message || "";
    option.dataset.live = String(live.has(option.value));
  }
  if (state.modelChosen || live.has(el.model.value)) return;
  const candidates = [...el.model.options].filter((option) => live.has(option.value));
  const pick = candidates.find((option) => !CONFIG.ocrModels.includes(option.value)) || candidates[0];
  if (pick) el.model.value = pick.value;
}

function setStatus(kind, label) {
  el.status.dataset.state = kind;
  el.status.querySelector(".label").textContent = label;
}

// -- shared options ------------------------------------------------------------------------------

function requestOptions() {
  const preset = state.presets.get(el.preset.value) || null;
  const maxTokens = el.maxTokens.value.trim() ? Number(el.maxTokens.value) : null;
  if (maxTokens !== null && !(Number.isInteger(maxTokens) && maxTokens >= 1 && maxTokens <= CONFIG.maxTokensLimit)) {
    throw new ApiFailure(`Max tokens must be a whole number from 1 to ${CONFIG.maxTokensLimit}.`);
  }
  const temperature = el.temperature.value.trim() ? Number(el.temperature.value) : null;
  if (temperature !== null && !(temperature >= 0 && temperature <= 2)) {
    throw new ApiFailure("Temperature must be a number from 0 to 2.");
  }
  const prompt = el.prompt.value.trim();
  if (!prompt) throw new ApiFailure("Write a prompt, or choose a preset.");
  return { preset, prompt, model: el.model.value, maxTokens, temperature };
}

function setBusy(busy) {
  state.busy = busy;
  renderSubmit();
  el.replySend.disabled = busy;
  el.reply.readOnly = busy;
  el.replyForm.setAttribute("aria-busy", String(busy));
  el.form.setAttribute("aria-busy", String(busy));
}

function showComposeError(message) {
  el.composeError.hidden = !message;
  el.composeError.textContent = message || "";
}

async function onSubmit(event) {
  event.preventDefault();
  if (state.busy || !state.staged.length) return;
  showComposeError(null);
  let options;
  try {
    options = requestOptions();
  } catch (error) {
    showComposeError(error.message);
    return;
  }
  if (state.staged.length === 1 && isDocument(state.staged[0].file)) {
    await startDocument(state.staged[0], options);
  } else if (state.staged.length === 1 && extracts(options.preset)) {
    await startExtraction(state.staged[0], options);
  } else if (state.staged.length === 1) {
    await startChat(state.staged[0], options);
  } else {
    await startBatch(options);
  }
}

// -- conversation --------------------------------------------------------------------------------

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new ApiFailure(`${file.name} could not be read.`));
    reader.readAsDataURL(file);
  });
}

async function startChat(staged, options) {
  setBusy(true);
  let dataUrl;
  try {
    dataUrl = await readDataUrl(staged.file);
  } catch (error) {
    setBusy(false);
    showComposeError(error.message);
    return;
  }
  openConversation(staged, options, { image: { url: staged.url, dataUrl, name: staged.file.name } });
  el.replyForm.hidden = false;
  const content = [{ type: "image_url", image_url: { url: dataUrl } }, { type: "text", text: options.prompt }];
  await ask({ role: "user", content }, options.prompt, staged.url);
}

// -- extraction: a job, and its fields drawn over the page ------------------------------------------

function extracts(preset) {
  // The service grounds the fields of presets with a schema (invoice, receipt, user presets), not of label presets.
  return Boolean(preset?.schema) && !preset.labels?.length;
}

function openConversation(staged, options, chat) {
  resetChat();
  state.chat = { image: { url: staged.url, name: staged.file.name }, messages: [], options, ...chat };
  clearStaged({ keepUrls: true }); // the conversation keeps showing the image
  selectTab("chat");
  el.chatEmpty.hidden = true;
  el.chatHead.hidden = false;
  el.chatTitle.textContent = staged.file.name;
  return state.chat;
}

async function startExtraction(staged, options) {
  setBusy(true);
  const chat = openConversation(staged, options, {});
  appendMessage("user", options.prompt, { imageUrl: staged.url, alt: staged.file.name });
  const reply = appendMessage("assistant thinking", "Extracting", {});
  reply.querySelector(".message-text").classList.add("dots");
  const form = new FormData();
  form.append("image", staged.file, staged.file.name);
  form.append("preset", options.preset.name);
  form.append("model", options.model);
  if (options.prompt !== options.preset.prompt) form.append("prompt", options.prompt);
  if (options.maxTokens) form.append("max_tokens", String(options.maxTokens));
  if (options.temperature !== null) form.append("temperature", String(options.temperature));
  const started = performance.now();
  try {
    let job = await api("/v1/jobs", { method: "POST", body: form });
    while (!JOB_ENDINGS.has(job.status)) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS / 2));
      if (state.chat !== chat) return; // closed meanwhile
      job = await api(`/v1/jobs/${encodeURIComponent(job.id)}`);
    }
    if (state.chat !== chat) return;
    if (job.status !== "succeeded") throw new ApiFailure(job.error?.message || `The job ended ${job.status}.`);
    finishAnswer(reply, job.result.text, job.usage, performance.now() - started);
    if (job.result.fields) {
      reply.classList.add("with-fields");
      reply.querySelector(".bubble").append(renderFields(job.result, (page) => pageImage(job, page, staged.url)));
    }
  } catch (error) {
    if (state.chat !== chat) return;
    reply.remove();
    appendMessage("assistant error", error.message, {});
  } finally {
    if (state.chat === chat) setBusy(false);
  }
}

async function pageImage(job, page, localUrl) {
  // A single image is the one this browser sent; a document's pages are the job's rendered pages.
  const id = encodeURIComponent(job.id);
  if (!job.pages?.length) {
    if (localUrl) return localUrl;
    return URL.createObjectURL(await (await send(`/v1/jobs/${id}/image`)).blob());
  }
  return URL.createObjectURL(await (await send(`/v1/jobs/${id}/pages/${page}/image`)).blob());
}

async function askFollowUp(event) {
  event.preventDefault();
  const text = el.reply.value.trim();
  if (state.busy || !state.chat || !text) return;
  el.reply.value = "";
  await ask({ role: "user", content: text }, text, null);
}

async function ask(userMessage, text, imageUrl) {
  setBusy(true);
  const chat = state.chat;
  const question = appendMessage("user", text, { imageUrl, alt: chat.image.name });
  const reply = appendMessage("assistant thinking", "Thinking", {});
  const replyText = reply.querySelector(".message-text");
  replyText.classList.add("dots");
  const { options } = chat;
  const conversation = [...chat.messages, userMessage];
  // Streamed, so the answer appears token by token; the last event carries the usage figures.
  const body = { model: options.model, messages: conversation, stream: true, stream_options: { include_usage: true } };
  if (options.maxTokens || options.preset?.max_tokens) body.max_tokens = options.maxTokens || options.preset.max_tokens;
  if (options.temperature !== null) body.temperature = options.temperature;
  if (options.preset?.schema) {
    body.response_format = { type: "json_schema", json_schema: { name: options.preset.name, schema: options.preset.schema } };
  }
  chat.abort = new AbortController();
  const started = performance.now();
  let answer = "";
  let usage = null;
  let streaming = false;
  try {
    const response = await send("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      signal: chat.abort.signal,
    });
    for await (const chunk of serverSentEvents(response)) {
      if (chunk.error) {
        throw new ApiFailure(chunk.error.message, { retryable: chunk.error.type !== "invalid_request_error" });
      }
      if (chunk.usage) usage = chunk.usage;
      const piece = chunk.choices?.[0]?.delta?.content;
      if (!piece) continue;
      if (!streaming) {
        streaming = true;
        reply.classList.remove("thinking");
        replyText.classList.remove("dots");
      }
      answer += piece;
      replyText.textContent = answer;
      scrollToEnd();
    }
    chat.messages = [...conversation, { role: "assistant", content: answer }];
    el.replyForm.hidden = false; // hidden after a first question failed; answered now (a retry), it can follow up
    finishAnswer(reply, answer, usage, performance.now() - started);
  } catch (error) {
    if (error.name === "AbortError") return; // the conversation was closed meanwhile
    reply.remove();
    const failed = appendMessage("assistant error", error.message, {});
    // The conversation keeps its image and turns: a question that may work again can be asked again in place.
    if (error.retryable) failed.querySelector(".message-meta").append(retryButton(() => {
      if (state.busy || state.chat !== chat) return;
      failed.remove();
      question.remove();
      ask(userMessage, text, imageUrl);
    }));
    if (!chat.messages.length) el.replyForm.hidden = true; // nothing to follow up on yet
  } finally {
    if (state.chat === chat) {
      setBusy(false);
      (chat.messages.length ? el.reply : el.prompt).focus({ preventScroll: true });
    }
  }
}

function appendMessage(kind, text, { imageUrl = null, alt = "" }) {
  const item = $("message-template").content.firstElementChild.cloneNode(true);
  item.className = `message ${kind}`;
  item.querySelector(".message-text").textContent = text;
  if (imageUrl) {
    const image = item.querySelector(".message-image");
    Object.assign(image, { src: imageUrl, alt, hidden: false });
  }
  el.messages.append(item);
  scrollToEnd();
  return item;
}

function finishAnswer(item, answer, usage, elapsedMs) {
  item.classList.remove("thinking");
  item.classList.add("answered");
  const text = item.querySelector(".message-text");
  text.classList.remove("dots");
  renderAnswerText(text, answer);
  const figures = [];
  if (usage?.completion_tokens != null) {
    figures.push([`${usage.completion_tokens} tokens out`, "tokens", "generated tokens"],
                 [`${usage.prompt_tokens} in`, "prompt-tokens", "prompt tokens, image included"]);
  }
  // total_time_ms is the server's submit-to-answer time; without it, the round trip seen here.
  const serverTotal = usage?.total_time_ms;
  figures.push([formatMs(serverTotal ?? elapsedMs), "latency",
                serverTotal != null ? "submit to answer, measured by the server" : "round trip, measured in this browser"]);
  const meta = item.querySelector(".message-meta");
  for (const [label, kind, title] of figures) {
    meta.append(Object.assign(document.createElement("span"), { className: `figure ${kind}`, textContent: label, title }));
  }
  meta.append(copyButton(answer));
  scrollToEnd();
}

function scrollToEnd() {
  // Only the conversation scrolls, never the page around it.
  el.messages.scrollTop = el.messages.scrollHeight;
}

function renderAnswerText(container, answer) {
  // Structured output reads better indented; anything else is shown as the model wrote it.
  try {
    const parsed = JSON.parse(answer);
    if (parsed && typeof parsed === "object") {
      container.replaceChildren(Object.assign(document.createElement("pre"), { textContent: JSON.stringify(parsed, null, 2) }));
      return;
    }
  } catch { /* plain text */ }
  container.textContent = answer;
  markBlank(container, answer);
}

function markBlank(container, text) {
  // A whitespace-only answer (the tiny test model's greedy output) would look like nothing at all; say so.
  container.classList.toggle("blank", !text.trim());
  container.dataset.blank = "(only whitespace)";
}

function retryButton(retry) {
  const button = Object.assign(document.createElement("button"), {
    type: "button", className: "copy-button retry-button", textContent: "Retry",
    title: "Ask the same question again",
  });
  button.addEventListener("click", retry);
  return button;
}

function copyButton(text) {
  const button = Object.assign(document.createElement("button"), { type: "button", className: "copy-button" });
  const label = Object.assign(document.createElement("span"), { textContent: "Copy" });
  button.innerHTML = '<svg class="icon" aria-hidden="true"><use href="#i-copy"/></svg>';
  button.append(label);
  button.setAttribute("aria-label", "Copy answer");
  button.addEventListener("click", async () => {
    label.textContent = (await copyText(text)) ? "Copied" : "Copy failed";
    setTimeout(() => { label.textContent = "Copy"; }, 1600);
  });
  return button;
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // navigator.clipboard needs a secure context; a page served over plain http on a LAN address has none.
    const area = Object.assign(document.createElement("textarea"), { value: text });
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    return copied;
  }
}

// -- documents -----------------------------------------------------------------------------------

function appendJobOptions(form, options) {
  // What a job and every item of a native batch take alike, as form fields.
  form.append("prompt", options.prompt);
  form.append("model", options.model);
  if (options.preset) form.append("preset", options.preset.name);
  if (options.maxTokens) form.append("max_tokens", String(options.maxTokens));
  if (options.temperature !== null) form.append("temperature", String(options.temperature));
  appendPageOptions(form);
}

function appendPageOptions(form) {
  // Only where a document is staged (the fields are hidden otherwise).
  if (el.documentOptions.hidden) return;
  if (el.pages.value.trim()) form.append("pages", el.pages.value.trim());
  form.append("page_mode", el.pageMode.value);
}

async function startDocument(staged, options) {
  // One document is one job: sent whole, read by the worker page by page, polled until it ends.
  setBusy(true);
  const form = new FormData();
  form.append("image", staged.file, staged.file.name);
  appendJobOptions(form, options);
  let job;
  try {
    job = await api("/v1/jobs", { method: "POST", body: form });
  } catch (error) {
    setBusy(false);
    showComposeError(error.message);
    return;
  }
  resetChat();
  clearStaged();
  selectTab("chat");
  el.chatEmpty.hidden = true;
  el.chatHead.hidden = false;
  el.chatTitle.textContent = staged.file.name;
  const question = appendMessage("user", options.prompt, {});
  const reply = appendMessage("assistant thinking", "Reading the pages", {});
  reply.querySelector(".message-text").classList.add("dots");
  const chat = state.chat = { image: { url: "", name: staged.file.name }, messages: [], options, job: job.id };
  try {
    while (!JOB_ENDINGS.has(job.status)) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (state.chat !== chat) return; // closed meanwhile
      job = await api(`/v1/jobs/${encodeURIComponent(job.id)}`);
    }
    question.prepend(pageStrip(job));
    if (job.status !== "succeeded") throw new ApiFailure(`${job.error?.code}: ${job.error?.message}`);
    finishAnswer(reply, job.result.text, { ...job.usage, total_time_ms: job.timings.total_ms }, 0);
    if (job.page_mode === "per_page") reply.querySelector(".bubble").append(...pageAnswers(job));
    if (job.result.fields) { // an extraction preset's grounded fields (document mode), drawn on the rendered pages
      reply.classList.add("with-fields");
      reply.querySelector(".bubble").append(renderFields(job.result, (page) => pageImage(job, page)));
    }
  } catch (error) {
    reply.remove();
    appendMessage("assistant error", error.message, {});
  } finally {
    if (state.chat === chat) setBusy(false);
  }
}

function pageStrip(job) {
  // Each page's image as the worker rendered it, in the job's order.
  const strip = Object.assign(document.createElement("div"), { className: "page-strip" });
  strip.setAttribute("aria-label", "Pages");
  for (const page of job.pages || []) {
    const figure = document.createElement("figure");
    figure.dataset.page = page.page;
    const image = Object.assign(document.createElement("img"), { alt: `Page ${page.page}`, decoding: "async" });
    const caption = Object.assign(document.createElement("figcaption"), { textContent: `Page ${page.page}` });
    figure.append(image, caption);
    strip.append(figure);
    if (!page.image) continue;
    send(`/v1/jobs/${encodeURIComponent(job.id)}/pages/${page.page}/image`)
      .then((response) => response.blob())
      .then((blob) => { image.src = URL.createObjectURL(blob); })
      .catch(() => { caption.textContent += " (not available)"; });
  }
  return strip;
}

function pageAnswers(job) {
  // per_page: each page's own answer under the document's.
  return job.pages.filter((page) => page.result).map((page) => Object.assign(document.createElement("p"), {
    className: "page-answer", textContent: `Page ${page.page}: ${page.result.text}`,
  }));
}

async function jobThumbnail(jobId) {
  // A blob URL of the job's image, or of its first page where the image is a document. Fetched, not linked:
  // an <img src> cannot send the API key.
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const blob = await (await send(`${path}/image`)).blob();
  if (SHOWN_TYPES.has(blob.type)) return URL.createObjectURL(blob);
  return URL.createObjectURL(await (await send(`${path}/pages/1/image`)).blob());
}

function resetChat() {
  if (state.chat) {
    state.chat.abort?.abort(); // the server cancels the job of an abandoned stream
    if (state.chat.image.url) URL.revokeObjectURL(state.chat.image.url);
    if (state.busy) setBusy(false);
  }
  state.chat = null;
  el.messages.replaceChildren();
  el.chatEmpty.hidden = false;
  el.chatHead.hidden = true;
  el.replyForm.hidden = true;
}

function timingDetail(timings) {
  const parts = [["queued", timings.queue_ms], ["first token", timings.ttft_ms], ["generating", timings.inference_ms]];
  return parts.filter(([, ms]) => ms != null).map(([label, ms]) => `${label} ${formatMs(ms)}`).join(", ");
}

function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

// -- batches -------------------------------------------------------------------------------------

async function startBatch(options) {
  setBusy(true);
  const form = new FormData();
  appendJobOptions(form, options);
  for (const { file } of state.staged) form.append("images", file, file.name);
  try {
    const batch = await api("/v1/batches", { method: "POST", body: form });
    clearStaged();
    showBatch(batch.id, batch);
    loadRecentBatches();
  } catch (error) {
    showComposeError(error.message);
  } finally {
    setBusy(false);
  }
}

function showBatch(batchId, initial = null) {
  if (state.batch) clearTimeout(state.batch.timer);
  state.batch = { id: batchId, timer: null, rows: new Map(), done: -1, status: null };
  history.replaceState(null, "", `#batch=${encodeURIComponent(batchId)}`);
  selectTab("batch");
  el.batchEmpty.hidden = true;
  el.batchBody.hidden = false;
  el.batchError.hidden = true;
  el.batchId.textContent = batchId;
  el.resultsBody.replaceChildren();
  const base = `/v1/batches/${encodeURIComponent(batchId)}/results`;
  el.downloadCsv.href = `${base}?format=csv`;
  el.downloadCsv.download = `${batchId}.csv`;
  el.downloadJsonl.href = `${base}?format=jsonl`;
  el.downloadJsonl.download = `${batchId}.jsonl`;
  markRecent();
  if (initial) renderBatch(initial);
  pollBatch(batchId);
}

async function pollBatch(batchId) {
  const current = () => state.batch?.id === batchId;
  try {
    const batch = await api(`/v1/batches/${encodeURIComponent(batchId)}`);
    if (!current()) return;
    await renderBatch(batch);
  } catch (error) {
    if (!current()) return;
    el.batchError.hidden = false;
    el.batchError.textContent = error.message;
  }
  if (current() && !BATCH_ENDINGS.has(state.batch.status)) {
    state.batch.timer = setTimeout(() => pollBatch(batchId), POLL_MS);
  }
}

async function renderBatch(batch) {
  const counts = batch.request_counts || { total: 0, completed: 0, failed: 0, cancelled: 0 };
  const done = counts.completed + counts.failed + (counts.cancelled || 0);
  const ran = counts.completed + counts.failed; // cancelled items never ran: they do not fill the bar
  const ended = BATCH_ENDINGS.has(batch.status);
  // A completed batch is full and green; one that ended otherwise shows what ran, in its ending's colour.
  const filled = batch.status === "completed" ? counts.total : ran;
  const percent = counts.total ? Math.round((100 * filled) / counts.total) : (batch.status === "completed" ? 100 : 0);
  el.batchStatus.textContent = batch.status.replace("_", " ");
  el.batchStatus.dataset.status = batch.status;
  el.progress.setAttribute("aria-valuenow", String(percent));
  el.progress.setAttribute("aria-valuetext", `${ran} of ${counts.total} ran, ${done} ended`);
  el.progress.dataset.state = !ended ? "running" : batch.status === "completed" ? "done" : batch.status;
  el.progress.querySelector(".progress-bar").style.width = `${percent}%`;
  $("count-done").textContent = done;
  $("count-total").textContent = counts.total;
  $("count-completed").textContent = counts.completed;
  $("count-failed").textContent = counts.failed;
  $("count-cancelled").textContent = counts.cancelled || 0;
  el.cancelBatch.disabled = ended || batch.status === "cancelling";
  // Items waiting for a model no live worker serves: say so, with what fixes it (the API's own words).
  const warnings = ended ? [] : batch.warnings || [];
  el.batchWarning.hidden = !warnings.length;
  el.batchWarning.textContent = warnings.map((warning) => warning.message).join(" ");
  if (batch.status === "failed" && batch.errors?.data?.length) {
    el.batchError.hidden = false;
    el.batchError.textContent = batch.errors.data.map((e) => e.message).join(" ");
  }
  // The results stream is read again only when something ended, or the batch moved on.
  const changed = done !== state.batch.done || batch.status !== state.batch.status;
  state.batch.status = batch.status;
  if (changed) {
    state.batch.done = done;
    await loadResults(batch.id);
    updateRecent(batch);
  }
}

async function loadResults(batchId) {
  const response = await send(`/v1/batches/${encodeURIComponent(batchId)}/results`).catch(() => null);
  if (!response || state.batch?.id !== batchId) return;
  const lines = (await response.text()).split("\n").filter(Boolean).map((line) => JSON.parse(line));
  for (const row of lines) renderRow(row);
}

function renderRow(row) {
  let tr = state.batch.rows.get(row.job_id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.jobId = row.job_id;
    tr.innerHTML = '<td class="image"></td><td class="file"></td><td class="status"></td><td class="answer"></td>'
      + '<td class="num tokens"></td><td class="num latency"></td>';
    tr.querySelector(".file").textContent = row.custom_id;
    const image = Object.assign(document.createElement("img"), {
      className: "thumb", decoding: "async", alt: row.custom_id,
    });
    const noImage = () => image.replaceWith(Object.assign(document.createElement("div"),
      { className: "no-thumb", textContent: "no image" }));
    image.addEventListener("error", noImage);
    jobThumbnail(row.job_id).then((url) => { image.src = url; }).catch(noImage);
    tr.querySelector(".image").append(image);
    state.batch.rows.set(row.job_id, tr);
    el.resultsBody.append(tr);
  }
  const badge = Object.assign(document.createElement("span"), { className: "badge", textContent: row.status });
  badge.dataset.status = row.status;
  tr.dataset.status = row.status;
  tr.querySelector(".status").replaceChildren(badge);
  const answer = tr.querySelector(".answer");
  answer.classList.toggle("error", Boolean(row.error_code));
  answer.textContent = row.error_code ? `${row.error_code}: ${row.error_message}` : (row.text ?? "");
  markBlank(answer, row.text == null ? "-" : answer.textContent);
  tr.querySelector(".tokens").textContent = row.completion_tokens != null
    ? `${row.prompt_tokens} in · ${row.completion_tokens} out` : "";
  // Latency only for an item that ran (or was answered from the cache): one cancelled in the queue has none.
  const ran = row.total_ms != null && row.queue_ms != null;
  const latency = tr.querySelector(".latency");
  latency.textContent = ran ? formatMs(row.total_ms) : "";
  latency.title = ran ? timingDetail(row) : "";
}

async function cancelBatch() {
  if (!state.batch) return;
  el.cancelBatch.disabled = true;
  try {
    await renderBatch(await api(`/v1/batches/${encodeURIComponent(state.batch.id)}/cancel`, { method: "POST" }));
  } catch (error) {
    el.batchError.hidden = false;
    el.batchError.textContent = error.message;
  }
  if (!BATCH_ENDINGS.has(state.batch.status)) pollBatch(state.batch.id);
}

async function loadRecentBatches() {
  try {
    const { data } = await api("/v1/batches?limit=6");
    if (!data.length) return;
    el.recent.replaceChildren(...data.map(recentItem));
    markRecent();
  } catch { /* the list is a convenience; the batch view reports real errors */ }
}

function recentItem(batch) {
  const item = document.createElement("li");
  const button = Object.assign(document.createElement("button"), { type: "button" });
  button.dataset.batchId = batch.id;
  const id = Object.assign(document.createElement("code"), { textContent: batch.id });
  const badge = Object.assign(document.createElement("span"), { className: "badge" });
  button.append(id, badge);
  button.addEventListener("click", () => showBatch(batch.id));
  item.append(button);
  fillRecent(button, batch);
  return item;
}

function fillRecent(button, batch) {
  const counts = batch.request_counts || {};
  const badge = button.querySelector(".badge");
  badge.dataset.status = batch.status;
  badge.textContent = `${batch.status.replace("_", " ")} ${counts.completed ?? 0}/${counts.total ?? 0}`;
}

function updateRecent(batch) {
  const button = el.recent.querySelector(`[data-batch-id="${CSS.escape(batch.id)}"]`);
  if (button) fillRecent(button, batch);
}

function markRecent() {
  for (const button of el.recent.querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.batchId === state.batch?.id));
  }
}

// -- tabs and start ------------------------------------------------------------------------------

function selectTab(name) {
  const chat = name === "chat";
  el.tabChat.setAttribute("aria-selected", String(chat));
  el.tabBatch.setAttribute("aria-selected", String(!chat));
  el.chatView.hidden = !chat;
  el.batchView.hidden = chat;
}

async function downloadWithKey(event) {
  // A plain link cannot send the API key: fetch the file, then hand the browser a local copy to save.
  event.preventDefault();
  const link = event.currentTarget;
  try {
    const blob = await (await send(link.href)).blob();
    const local = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: link.download });
    local.click();
    setTimeout(() => URL.revokeObjectURL(local.href), 10000);
  } catch (error) {
    el.batchError.hidden = false;
    el.batchError.textContent = error.message;
  }
}

function setupApiKey() {
  const field = $("api-key");
  if (!field) return; // auth is off on this server
  field.value = localStorage.getItem(KEY_STORAGE) || "";
  field.addEventListener("change", () => {
    const key = field.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
    loadPresets();
    loadRecentBatches();
    refreshStatus();
  });
}

function start() {
  setupApiKey();
  setupDropzone();
  el.downloadCsv.addEventListener("click", downloadWithKey);
  el.downloadJsonl.addEventListener("click", downloadWithKey);
  el.form.addEventListener("submit", onSubmit);
  el.preset.addEventListener("change", onPresetChange);
  el.model.addEventListener("change", () => { state.modelChosen = true; });
  el.replyForm.addEventListener("submit", askFollowUp);
  el.reply.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); el.replyForm.requestSubmit(); }
  });
  el.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); el.form.requestSubmit(); }
  });
  el.newChat.addEventListener("click", () => { resetChat(); el.prompt.focus(); });
  el.cancelBatch.addEventListener("click", cancelBatch);
  el.tabChat.addEventListener("click", () => selectTab("chat"));
  el.tabBatch.addEventListener("click", () => selectTab("batch"));
  loadPresets();
  loadRecentBatches();
  refreshStatus();
  setInterval(refreshStatus, 10000);
  const linked = new URLSearchParams(location.hash.slice(1)).get("batch");
  if (linked) showBatch(linked);
  renderStaged();
  document.body.dataset.ready = "true"; // the page's handlers are in place (browser tests wait for it)
}

start();
