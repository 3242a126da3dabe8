// The page: choose/drop/paste/capture a photo -> shrink it -> POST /pose -> draw every person's
// skeleton and box, list the people, show the joints of the one picked (on the photo or in the
// list), and redraw when the threshold slider moves (no new request). A short clip goes to POST /track
// instead and plays back with every person's track drawn over it (web/tracks.js).

import { ProblemError, estimatePose, health, loadConfig } from "./api.js";
import { cameraAvailable, setUpCamera } from "./camera.js";
import { drawPeople, peopleOf, personAt, scaleOf, sidesFor, visibility } from "./draw.js";
import { loadPhoto } from "./photo.js";
import { setUpClip } from "./tracks.js";

const $ = (id) => document.getElementById(id);
const el = {
  apiStatus: $("api-status"),
  drop: $("drop"),
  pick: $("pick"),
  file: $("file"),
  cameraOpen: $("camera-open"),
  threshold: $("threshold"),
  thresholdValue: $("threshold-value"),
  busy: $("busy"),
  error: $("error"),
  errorTitle: $("error-title"),
  errorDetail: $("error-detail"),
  result: $("result"),
  placeholder: $("placeholder"),
  figure: $("figure"),
  canvas: $("canvas"),
  photoName: $("photo-name"),
  summaryRow: $("summary-row"),
  peopleCount: $("people-count"),
  summaryNumber: $("summary-number"),
  visibleCount: $("visible-count"),
  jointCount: $("joint-count"),
  downloadPng: $("download-png"),
  downloadJson: $("download-json"),
  details: $("details"),
  facts: $("facts"),
  people: $("people"),
  pickedNumber: $("picked-number"),
  tbody: document.querySelector("#joints tbody"),
  modelFacts: $("model-facts"),
  timingFacts: $("timing-facts"),
  attribution: $("attribution"),
};

const state = {
  api: { apiBaseUrl: "", apiKey: "" }, // from config.json
  card: null, // the model card from /health, when it answered
  photo: null, // the shrunk photo being shown
  pose: null, // the API's reply for it
  people: [], // its people, the main person first (one for an older one-person reply)
  picked: 0, // the person whose joints the table shows
  roundTripMs: null,
  sides: [],
  thresholdTouched: false,
  request: 0, // a newer photo supersedes the reply to an older one
};

// ---- messages -------------------------------------------------------------------------------

function showProblem(error) {
  const problem = error instanceof ProblemError
    ? error
    : new ProblemError("bug", "Something went wrong in this page.", String(error?.message || error));
  el.errorTitle.textContent = problem.title;
  el.errorDetail.textContent = problem.detail;
  el.error.dataset.kind = problem.kind;
  el.error.hidden = false;
  if (!(error instanceof ProblemError)) console.error(error);
}

function clearProblem() {
  el.error.hidden = true;
  el.errorTitle.textContent = "";
  el.errorDetail.textContent = "";
  delete el.error.dataset.kind;
}

function setApiStatus(kind, text) {
  el.apiStatus.dataset.state = kind;
  el.apiStatus.textContent = text;
}

function setBusy(busy) {
  el.busy.hidden = !busy;
  el.pick.disabled = busy;
  el.cameraOpen.disabled = busy;
  el.result.setAttribute("aria-busy", String(busy));
  el.drop.dataset.busy = String(busy);
}

// ---- the result -----------------------------------------------------------------------------

const threshold = () => Number(el.threshold.value);

function showThreshold() {
  el.thresholdValue.textContent = threshold().toFixed(2);
}

function buildTable(joints) {
  el.tbody.replaceChildren(...joints.map((joint, i) => {
    const row = document.createElement("tr");
    const name = document.createElement("th");
    name.scope = "row";
    const swatch = document.createElement("span");
    swatch.className = `swatch ${state.sides[i]}`;
    swatch.setAttribute("aria-hidden", "true");
    name.append(swatch, joint.name);
    const cells = [joint.x.toFixed(1), joint.y.toFixed(1), joint.score.toFixed(3)].map((text) => {
      const td = document.createElement("td");
      td.className = "num";
      td.textContent = text;
      return td;
    });
    const seen = document.createElement("td");
    seen.className = "seen";
    row.append(name, ...cells, seen);
    return row;
  }));
  el.jointCount.textContent = String(joints.length);
}

/** One button per person: number, score and (filled in by render) how many joints are visible. */
function buildPeopleList(people) {
  el.people.replaceChildren(...people.map((person, p) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.person = String(p);
    const number = document.createElement("span");
    number.className = "person-number";
    number.textContent = String(p + 1);
    const score = typeof person.score === "number" ? person.score.toFixed(2) : "–";
    const text = document.createElement("span");
    text.append(`score ${score} · `);
    const seen = document.createElement("span");
    seen.className = "person-visible";
    text.append(seen, ` of ${person.joints.length} joints visible`);
    button.append(number, text);
    button.addEventListener("click", () => pick(p));
    item.append(button);
    return item;
  }));
  el.peopleCount.textContent = people.length === 1 ? "1 person" : `${people.length} people`;
}

function factList(target, pairs) {
  target.replaceChildren(...pairs.flatMap(([term, value, title]) => {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    if (title) dd.title = title;
    return [dt, dd];
  }));
}

function showFacts(pose, photo, roundTripMs) {
  const model = pose.model || {};
  const person = state.people[state.picked];
  const region = person?.region;
  factList(el.modelFacts, [
    ["Name", model.name ?? "?"],
    ["Version", model.version ?? "?"],
    ["Weights", model.quantization ?? "?"],
    ["SHA-256", model.sha256 ? `${model.sha256.slice(0, 12)}…` : "?", model.sha256],
    ["Photo sent", `${photo.width}×${photo.height} px, ${Math.round(photo.bytes / 1024)} KB`],
    ...("detector" in pose ? [["Detector", pose.detector?.name ?? "none: the photo is one person"]] : []),
    ["Looked at", region
      ? `${region.width}×${region.height} px around person ${state.picked + 1}`
      : "the whole photo"],
  ]);
  const ms = (value) => (typeof value === "number" ? `${value.toFixed(1)} ms` : "–");
  const t = pose.timings_ms || {};
  factList(el.timingFacts, [
    ...Object.entries(t).filter(([key]) => key !== "render" || t.render > 0).map(([key, value]) => [key[0].toUpperCase() + key.slice(1), ms(value)]),
    ["Round trip", ms(roundTripMs)],
  ]);
}

/** Draw the photo and (when there is one) every person at the slider's threshold; update the
 * list's counts and the picked person's table. */
function render() {
  const { photo, pose, people, picked } = state;
  if (!photo) return;
  const visible = people.map((person) => visibility(person.joints, threshold()));
  // What the canvas shows, as data (web/draw.js drawingOf's marks): for the console, and the browser tests read it.
  window.__drawn = drawPeople(el.canvas, photo.canvas, pose, people, state.sides, visible, picked);
  if (!pose) {
    el.canvas.setAttribute("aria-label", `Photo “${photo.name}”, being analysed`);
    return;
  }
  const counts = visible.map((shown) => shown.filter(Boolean).length);
  el.people.querySelectorAll(".person-visible").forEach((span, p) => { span.textContent = String(counts[p]); });
  el.people.querySelectorAll("button").forEach((button, p) => button.setAttribute("aria-pressed", String(p === picked)));
  const mine = visible[picked] || [];
  el.pickedNumber.textContent = el.summaryNumber.textContent = String(picked + 1);
  el.visibleCount.textContent = String(counts[picked] ?? 0);
  [...el.tbody.rows].forEach((row, i) => {
    row.dataset.visible = String(mine[i]);
    row.cells[4].textContent = mine[i] ? "yes" : "no";
  });
  el.canvas.setAttribute("aria-label",
    `Photo “${photo.name}” with ${el.peopleCount.textContent} drawn over it, each in a numbered box; ` +
    `joints with a score of at least ${threshold().toFixed(2)} are shown as dots joined by lines, ` +
    "the person’s left side in blue, right side in orange. The list names every person and the table lists " +
    `the joints of person ${picked + 1}.`);
}

/** Show person `p`'s joints in the table and highlight them on the photo. */
function pick(p) {
  if (!state.people[p]) return;
  state.picked = p;
  buildTable(state.people[p].joints);
  showFacts(state.pose, state.photo, state.roundTripMs);
  render();
}

/** The person under a pointer event on the canvas (the smallest box holding it), or -1. */
function personUnder(event) {
  if (!state.pose) return -1;
  const rect = el.canvas.getBoundingClientRect();
  const [kx, ky] = scaleOf(el.canvas, state.pose);
  const x = ((event.clientX - rect.left) * el.canvas.width) / rect.width / kx - 0.5;
  const y = ((event.clientY - rect.top) * el.canvas.height) / rect.height / ky - 0.5;
  return personAt(state.people, x, y);
}

function showPhoto(photo) {
  state.photo = photo;
  state.pose = null;
  state.people = [];
  state.picked = 0;
  el.placeholder.hidden = true;
  el.figure.hidden = false;
  el.summaryRow.hidden = true;
  el.details.hidden = true;
  el.facts.hidden = true;
  el.photoName.textContent = `${photo.name} · ${photo.width}×${photo.height}`;
  render();
}

function showPose(pose, roundTripMs) {
  state.pose = pose;
  state.people = peopleOf(pose);
  state.picked = 0;
  state.roundTripMs = roundTripMs;
  const names = (state.people[0]?.joints || pose.joints).map((joint) => joint.name);
  const cardFits = state.card && Array.isArray(state.card.joints) && state.card.joints.join() === names.join();
  state.sides = sidesFor(names, cardFits ? state.card.sides : null);
  buildPeopleList(state.people);
  buildTable(state.people[0]?.joints || []);
  showFacts(pose, state.photo, roundTripMs);
  el.summaryRow.hidden = false;
  el.details.hidden = false;
  el.facts.hidden = false;
  render();
}

/** On a one-column (phone) layout the result is below the picker: bring it into view. */
function revealResult() {
  const top = el.result.getBoundingClientRect().top;
  if (window.matchMedia("(max-width: 899px)").matches && (top < 0 || top > window.innerHeight * 0.6)) {
    const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    el.result.scrollIntoView({ behavior: smooth ? "smooth" : "auto", block: "start" });
  }
}

// ---- a clip: chosen, tracked by the API, played back with its tracks (web/tracks.js) ------------

const clipView = setUpClip({
  el: {
    pick: $("clip-pick"), file: $("clip-file"), hint: $("clip-hint"), result: $("clip-result"), name: $("clip-name"),
    status: $("clip-status"), progress: $("clip-progress"), video: $("clip-video"), canvas: $("clip-canvas"),
    tracks: $("tracks"),
  },
  api: () => state.api,
  card: () => state.card,
  threshold,
  onStart: clearProblem,
  onProblem: showProblem,
});

// ---- a photo arrives ------------------------------------------------------------------------

async function handleFile(file) {
  const request = ++state.request;
  clearProblem();
  setBusy(true);
  el.result.dataset.state = "busy";
  try {
    const photo = await loadPhoto(file);
    if (request !== state.request) return;
    showPhoto(photo);
    const started = performance.now();
    const pose = await estimatePose(state.api, photo.dataUrl, threshold());
    if (request !== state.request) return;
    showPose(pose, performance.now() - started);
    el.result.dataset.state = "done";
    revealResult();
    if (el.apiStatus.dataset.state !== "ready") setApiStatus("ready", `Ready · ${pose.model?.name ?? "model"}`);
  } catch (error) {
    if (request !== state.request) return;
    el.result.dataset.state = "error";
    showProblem(error);
  } finally {
    if (request === state.request) setBusy(false);
  }
}

// ---- downloads ------------------------------------------------------------------------------

function save(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function baseName() {
  return (state.photo?.name || "photo").replace(/\.[^.]*$/, "") || "photo";
}

/** Joints and COCO keypoints with the visible flags of threshold `t`. */
function jointsAt(joints, t) {
  const visible = visibility(joints, t);
  const marked = joints.map((joint, i) => ({ ...joint, visible: visible[i] }));
  return { joints: marked, keypoints: marked.flatMap((joint) => (joint.visible ? [joint.x, joint.y, 2] : [0, 0, 0])) };
}

/** The reply as the API would give it at the slider's threshold (visible flags and keypoints). */
function poseAtThreshold() {
  const t = threshold();
  const reply = { ...state.pose, ...jointsAt(state.pose.joints, t), threshold: t };
  if (Array.isArray(state.pose.people)) reply.people = state.pose.people.map((p) => ({ ...p, ...jointsAt(p.joints, t) }));
  return reply;
}

el.downloadPng.addEventListener("click", () => {
  el.canvas.toBlob((blob) => blob && save(blob, `${baseName()}-pose.png`), "image/png");
});
el.downloadJson.addEventListener("click", () => {
  if (!state.pose) return;
  const text = `${JSON.stringify(poseAtThreshold(), null, 2)}\n`;
  save(new Blob([text], { type: "application/json" }), `${baseName()}-pose.json`);
});

// ---- inputs ---------------------------------------------------------------------------------

el.pick.addEventListener("click", () => el.file.click());
el.file.addEventListener("change", () => {
  const [file] = el.file.files;
  el.file.value = ""; // choosing the same file again still fires change
  if (file) handleFile(file);
});

el.canvas.addEventListener("click", (event) => {
  const p = personUnder(event);
  if (p >= 0) pick(p);
});
el.canvas.addEventListener("mousemove", (event) => {
  el.canvas.dataset.over = personUnder(event) >= 0 ? "person" : "";
});

el.threshold.addEventListener("input", () => {
  state.thresholdTouched = true;
  showThreshold();
  render();
  clipView.redraw();
});

let dragDepth = 0;
const draggingFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
document.addEventListener("dragenter", (event) => {
  if (!draggingFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  el.drop.dataset.dragging = "true";
});
document.addEventListener("dragover", (event) => {
  if (!draggingFiles(event)) return;
  event.preventDefault(); // accept the drop anywhere on the page, instead of the browser opening the file
  event.dataTransfer.dropEffect = "copy";
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) el.drop.dataset.dragging = "false";
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  el.drop.dataset.dragging = "false";
  const [file] = event.dataTransfer?.files || [];
  if (file) handleFile(file);
  else showProblem(new ProblemError("no_file", "Nothing to open.", "Drop a photo file from your device (not a picture from another web page)."));
});
document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) {
    event.preventDefault();
    handleFile(file);
  }
});

if (cameraAvailable()) {
  const openCamera = setUpCamera({
    dialog: $("camera"),
    video: $("video"),
    shoot: $("camera-shoot"),
    switchButton: $("camera-switch"),
    cancel: $("camera-cancel"),
    onPhoto: handleFile,
    onProblem: showProblem,
  });
  el.cameraOpen.hidden = false;
  el.cameraOpen.addEventListener("click", () => {
    clearProblem();
    openCamera();
  });
}

// ---- start ----------------------------------------------------------------------------------

async function start() {
  showThreshold();
  try {
    state.api = await loadConfig();
  } catch (error) {
    setApiStatus("error", error.title || "Settings could not be loaded");
    showProblem(error);
    return;
  }
  const where = state.api.apiBaseUrl ? new URL(state.api.apiBaseUrl).host : "this site";
  try {
    const status = await health(state.api); // also wakes a cold function before the first photo
    state.card = status.model;
    if (!state.thresholdTouched && typeof state.card.threshold === "number") {
      el.threshold.value = String(state.card.threshold);
      showThreshold();
    }
    setApiStatus("ready", `Ready · ${state.card.name ?? "model"}${state.card.version ? ` v${state.card.version}` : ""}`);
    if (state.card.attribution) el.attribution.textContent = `Model: ${state.card.attribution}`;
  } catch (error) {
    // Not fatal: the page can still try when a photo comes; the full explanation shows then.
    setApiStatus("error", `API at ${where}: ${error.title || "not reachable"}`);
  }
}

start();
