// An extraction's grounded fields (the job's result.fields): each field's box drawn over its page, beside a table
// of fields; hovering or focusing a field (its row or its box) highlights both. Pages come from `pageUrl(page)`,
// a promise of an image URL, so a multi-page document shows each page that holds a field.

function percent(value) {
  return `${(value * 100).toFixed(3)}%`;
}

function formatConfidence(value) {
  return value == null ? "—" : `${Math.round(value * 100)}%`;
}

function formatValue(value) {
  return value == null ? "null" : typeof value === "string" ? value : JSON.stringify(value);
}

export function renderFields(result, pageUrl) {
  const fields = Object.entries(result.fields || {});
  const flagged = new Map((result.review_reasons || []).map((reason) => [reason.field, reason.reason]));
  const boxes = new Map();
  const rows = new Map();
  const highlight = (path, on) => {
    boxes.get(path)?.classList.toggle("active", on);
    rows.get(path)?.classList.toggle("active", on);
  };
  const hoverable = (node, path) => {
    node.addEventListener("mouseenter", () => highlight(path, true));
    node.addEventListener("mouseleave", () => highlight(path, false));
    node.addEventListener("focus", () => highlight(path, true));
    node.addEventListener("blur", () => highlight(path, false));
  };

  const root = Object.assign(document.createElement("div"), { className: "extraction" });
  const review = Object.assign(document.createElement("p"), { className: `review ${result.review ? "needed" : "clear"}` });
  review.textContent = result.review
    ? `Needs review: ${[...flagged].map(([field, reason]) => `${field} (${reason.replace("_", " ")})`).join(", ")}`
    : "Every required field is on the page, with enough confidence.";
  root.append(review);

  const pages = [...new Set(fields.map(([, field]) => field.page).filter((page) => page != null))].sort((a, b) => a - b);
  const figures = Object.assign(document.createElement("div"), { className: "pages" });
  for (const page of pages.length ? pages : [1]) {
    const figure = Object.assign(document.createElement("figure"), { className: "page" });
    figure.dataset.page = String(page);
    // The frame is exactly the image's size, so boxes placed in percent of it land where their values are.
    const frame = Object.assign(document.createElement("div"), { className: "frame" });
    const image = Object.assign(document.createElement("img"), { alt: `Page ${page}` });
    pageUrl(page).then((url) => { image.src = url; }).catch(() => { image.alt = `Page ${page} (image not available)`; });
    frame.append(image);
    figure.append(frame);
    for (const [path, field] of fields) {
      if (field.page !== page || !field.bbox) continue;
      const [x0, y0, x1, y1] = field.bbox;
      const box = Object.assign(document.createElement("div"), { className: "field-box", title: `${path}: ${formatValue(field.value)}` });
      box.dataset.field = path;
      Object.assign(box.style, { left: percent(x0), top: percent(y0), width: percent(x1 - x0), height: percent(y1 - y0) });
      hoverable(box, path);
      boxes.set(path, box);
      frame.append(box);
    }
    if (pages.length > 1) figure.append(Object.assign(document.createElement("figcaption"), { textContent: `Page ${page}` }));
    figures.append(figure);
  }
  root.append(figures);

  const table = document.createElement("table");
  table.className = "fields";
  table.innerHTML = "<thead><tr><th>Field</th><th>Value</th><th>Confidence</th><th>Page</th></tr></thead>";
  const body = document.createElement("tbody");
  for (const [path, field] of fields) {
    const row = document.createElement("tr");
    row.dataset.field = path;
    row.tabIndex = 0;
    row.classList.toggle("ungrounded", !field.grounded);
    if (flagged.has(path)) row.classList.add("flagged");
    for (const text of [path, formatValue(field.value), formatConfidence(field.confidence), field.page ?? "—"]) {
      row.append(Object.assign(document.createElement("td"), { textContent: String(text) }));
    }
    hoverable(row, path);
    rows.set(path, row);
    body.append(row);
  }
  table.append(body);
  root.append(table);
  return root;
}
