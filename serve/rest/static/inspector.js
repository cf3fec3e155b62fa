// The review inspector: sends the review to POST /v1/explain and draws the answer.
// Plain JS, no library, nothing fetched but this server's own API. User text only ever goes
// into the page as text nodes (never as HTML).
"use strict";

const EXAMPLES = [
  ["Turns sour at the end",
   "The opening hour is gorgeous, with sweeping shots of the coast. The two leads have real chemistry and the score is lovely. " +
   "I was completely won over by the first act. Then the plot collapses into a dull, predictable mess and the ending is awful."],
  ["Slow start, great finish",
   "I almost switched it off after twenty minutes; the setup is clumsy and the dialogue is stiff. " +
   "Stick with it. The second half is tense, funny and genuinely moving. One of the best films I have seen this year."],
  ["Plainly positive",
   "A warm, witty comedy with a terrific cast. Every scene has a joke that lands. I laughed all the way through and would happily watch it again."],
  ["Plainly negative",
   "Two hours I will never get back. The acting is wooden, the jokes fall flat and the story makes no sense. Avoid this one."],
];
const TOKEN_KEY = "inspector.token";
const H = 220, PAD = {left: 44, right: 12, top: 14, bottom: 30};

const $ = (id) => document.getElementById(id);

function svg(tag, attrs, parent) {
  const el = document.createElementNS($("chart").namespaceURI, tag);  // the inline <svg>'s namespace
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (parent) parent.appendChild(el);
  return el;
}

function fmt(p) { return p === null || p === undefined ? "not read" : p.toFixed(3); }
function signed(x) { return (x >= 0 ? "+" : "−") + Math.abs(x).toFixed(3); }

// Effect -> background: green for positive, red for negative, stronger for larger effects; dark text stays readable.
function effectColour(effect) {
  const strength = Math.sqrt(Math.min(1, Math.abs(effect) / 0.5));
  const lightness = 95 - 25 * strength;
  return effect >= 0 ? `hsl(140, 55%, ${lightness}%)` : `hsl(0, 80%, ${lightness}%)`;
}

function setBusy(busy) {
  $("result").setAttribute("aria-busy", String(busy));
  $("submit").disabled = busy;
  $("status").textContent = busy ? "Explaining…" : "";
}

function showError(message) {
  $("answer").hidden = true;
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

async function explain(text) {
  const headers = {"Content-Type": "application/json", "Accept": "application/json"};
  const token = $("token").value.trim();
  if (token) headers["Authorization"] = "Bearer " + token;
  const reply = await fetch("/v1/explain", {method: "POST", headers, body: JSON.stringify({text}), cache: "no-store"});
  let body = null;
  try { body = await reply.json(); } catch (e) { body = null; }
  if (!reply.ok) {
    const reason = body && typeof body.error === "string" ? body.error : reply.statusText;
    const error = new Error(`The server refused (HTTP ${reply.status}): ${reason}`);
    error.status = reply.status;
    throw error;
  }
  return body;
}

function drawChart(answer, length) {
  const chart = $("chart");
  for (const el of [...chart.querySelectorAll(":not(title):not(desc)")]) el.remove();
  // One user unit per CSS pixel (at least 320 wide), so labels keep their size on a phone.
  const W = Math.max(320, Math.round(chart.getBoundingClientRect().width) || 640);
  chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const w = W - PAD.left - PAD.right, h = H - PAD.top - PAD.bottom;
  const x = (pos) => PAD.left + (length ? pos / length : 0) * w;
  const y = (p) => PAD.top + (1 - p) * h;
  const bands = svg("g", {class: "bands"}, chart);
  answer.sentences.forEach((s, i) => {
    const band = svg("rect", {x: x(s.start), y: PAD.top, width: Math.max(1, x(s.end) - x(s.start)), height: h,
                              class: "band" + (s.effect === null ? " unread" : "")}, bands);
    if (s.effect !== null) band.style.fill = effectColour(s.effect);
    svg("title", {}, band).textContent = `Sentence ${i + 1}: effect ${s.effect === null ? "not read" : signed(s.effect)}`;
  });
  const axes = svg("g", {class: "axes"}, chart);
  for (const p of [0, 0.5, 1]) {
    svg("line", {x1: PAD.left, x2: W - PAD.right, y1: y(p), y2: y(p), class: p === 0.5 ? "threshold" : "grid"}, axes);
    const label = svg("text", {x: PAD.left - 6, y: y(p) + 4, "text-anchor": "end"}, axes);
    label.textContent = p.toFixed(1);
  }
  const xLabel = svg("text", {x: PAD.left + w / 2, y: H - 8, "text-anchor": "middle"}, axes);
  xLabel.textContent = "position in the review →";
  const read = answer.sentences.map((s, i) => [s, i]).filter(([s]) => s.running_probability !== null);
  const points = read.map(([s]) => `${x(s.end).toFixed(1)},${y(s.running_probability).toFixed(1)}`);
  svg("polyline", {points: points.join(" "), class: "line"}, chart);
  for (const [s, i] of read) {
    const cx = x(s.end), cy = y(s.running_probability);
    let mark;
    if (i === answer.turning_point) {
      mark = svg("polygon", {points: `${cx},${cy - 9} ${cx + 9},${cy} ${cx},${cy + 9} ${cx - 9},${cy}`,
                             class: "point turning-marker", "data-sentence": i}, chart);
      const tag = svg("text", {x: Math.min(cx, W - PAD.right - 4), y: cy < PAD.top + 24 ? cy + 24 : cy - 14,
                               "text-anchor": cx > W - 90 ? "end" : "middle", class: "turning-label"}, chart);
      tag.textContent = "turning point";
    } else {
      mark = svg("circle", {cx, cy, r: 4, class: "point", "data-sentence": i}, chart);
    }
    svg("title", {}, mark).textContent = `After sentence ${i + 1}: P(positive) ${fmt(s.running_probability)}`;
  }
  const first = read.length ? read[0][0].running_probability : null;
  const turning = answer.turning_point === null ? "no turning point" : `turning point at sentence ${answer.turning_point + 1}`;
  $("chart-desc").textContent = `${answer.sentences.length} sentences; P(positive) ${fmt(first)} after the first ` +
    `read sentence and ${fmt(answer.probability)} at the end; ${turning}.`;
}

function drawText(answer, text) {
  const box = $("text");
  box.replaceChildren();
  let at = 0;
  answer.sentences.forEach((s, i) => {
    if (s.start > at) box.append(text.slice(at, s.start));
    const span = document.createElement("span");
    span.className = "sentence";
    span.dataset.index = String(i);
    if (s.effect === null) {
      span.classList.add("unread");
    } else {
      span.classList.add(s.effect >= 0 ? "pos" : "neg");
      span.style.backgroundColor = effectColour(s.effect);
    }
    if (i === answer.turning_point) {
      span.classList.add("turning");
      const diamond = document.createElement("span");
      diamond.className = "diamond";
      diamond.setAttribute("aria-hidden", "true");
      diamond.textContent = "◆";
      span.append(diamond);
    }
    span.append(s.text);
    const note = document.createElement("span");
    note.className = "visually-hidden";
    note.textContent = s.effect === null ? " (not read by the model)"
      : ` (effect ${signed(s.effect)}, P(positive) after it ${fmt(s.running_probability)}` +
        (i === answer.turning_point ? ", turning point)" : ")");
    span.append(note);
    span.title = s.effect === null ? "not read (the model reads the start and end of long reviews)"
      : `effect ${signed(s.effect)}; P(positive) after it ${fmt(s.running_probability)}`;
    box.append(span);
    at = s.end;
  });
  if (at < text.length) box.append(text.slice(at));
  const t = answer.turning_point;
  $("turning").textContent = t === null ? "No turning point: the model read fewer than two sentences."
    : `◆ Turning point: sentence ${t + 1}, where P(positive) moved by ${signed(answer.sentences[t].swing)} ` +
      `to ${fmt(answer.sentences[t].running_probability)}.`;
}

function render(answer, text) {
  $("error").hidden = true;
  const label = $("label");
  label.textContent = answer.label;
  label.className = "label " + (answer.probability >= 0.5 ? "pos" : "neg");
  $("probability").textContent = answer.probability.toFixed(3);
  $("model").textContent = `${answer.model} v${answer.version}`;
  $("answer").hidden = false;
  drawChart(answer, text.length);
  drawText(answer, text);
}

async function submit(event) {
  event.preventDefault();
  const text = $("review").value;
  if (!text.trim()) {
    showError("Type or paste a review first.");
    $("review").focus();
    return;
  }
  if ($("remember").checked && $("token").value) sessionStorage.setItem(TOKEN_KEY, $("token").value);
  else sessionStorage.removeItem(TOKEN_KEY);
  setBusy(true);
  try {
    render(await explain(text), text);
  } catch (error) {
    showError(error.status ? error.message : `Could not reach the server: ${error.message}`);
    if (error.status === 401) {
      $("token-box").open = true;
      $("token").focus();
    }
  } finally {
    setBusy(false);
  }
}

function init() {
  const select = $("example");
  EXAMPLES.forEach(([name], i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = name;
    select.append(option);
  });
  select.addEventListener("change", () => {
    if (select.value !== "") $("review").value = EXAMPLES[Number(select.value)][1];
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    $("token").value = saved;
    $("remember").checked = true;
    $("token-box").open = true;  // the saved token stays in view, and can be cleared
  }
  $("explain-form").addEventListener("submit", submit);
  $("review").addEventListener("keydown", (event) => {  // Ctrl+Enter / Cmd+Enter submits from the text box
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("explain-form").requestSubmit();
  });
}

init();
