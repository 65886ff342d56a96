// The gallery's web page: "who is this?" for a dropped photo, and a People page to name clusters,
// merge people and reject faces. Plain DOM calls over the /v1 API; names are always set as text.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "gallery-api-key";
let identitiesOffset = 0;
const selected = new Set();

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function say(text, ok = false) {
  const box = $("message");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

function askKey() {
  $("key-input").value = localStorage.getItem(KEY) || "";
  $("key-dialog").showModal();
}

// One call to the API; a 401 asks for a key, any other error is shown with its reason.
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const key = localStorage.getItem(KEY);
  if (key) headers["X-Api-Key"] = key;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    askKey();
    throw new Error("This server needs an API key.");
  }
  const isJson = (response.headers.get("content-type") || "").includes("json");
  if (!response.ok) {
    const body = isJson ? await response.json() : { detail: await response.text() };
    throw new Error(`${body.error || response.status}: ${body.detail || ""}`);
  }
  return isJson ? response.json() : response.blob();
}

// Face crops and photos need the key too, so they are fetched and shown as object URLs.
function picture(path, alt) {
  const img = el("img", { alt });
  api(path).then((blob) => { img.src = URL.createObjectURL(blob); })
    .catch((error) => { img.alt = `(no picture: ${error.message || error})`; img.classList.add("missing"); });
  return img;
}

function crop(faceId, size = 160) {
  return picture(`/v1/faces/${faceId}/crop?size=${size}`, `face ${faceId}`);
}

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

// The last part of a photo's path: enough to tell photos apart on a card, the full path in its title.
function fileName(path) { return String(path).split(/[\\/]/).pop(); }

// --- who is this? -------------------------------------------------------------------------

let searchedFile = null;  // the photo on the search page, for "where else does this face appear?"

async function searchPhoto(file) {
  say("Searching…", true);
  searchedFile = file;
  $("search-hint").hidden = true;
  const form = new FormData();
  form.append("file", file);
  form.append("k", "3");
  const img = $("photo");
  img.src = URL.createObjectURL(file);
  $("result").hidden = false;
  $("answers").replaceChildren();
  document.querySelectorAll(".box").forEach((b) => b.remove());
  try {
    const answer = await api("/v1/search", { method: "POST", body: form });
    await img.decode().catch(() => {});
    showAnswers(answer);
    const named = answer.results.filter((r) => !r.unknown).length;
    const poor = answer.results.filter((r) => r.too_poor).length;
    say(`${plural(answer.results.length, "face")}: ${named} named, ${answer.results.length - named - poor} unknown` +
        (poor ? `, ${poor} too poor to identify.` : "."), true);
  } catch (error) {
    say(String(error.message || error));
  }
}

// Enough decimals that two different numbers never print alike (a face just below the threshold must
// not read "0.954 < 0.954").
function apart(a, b) {
  for (let d = 3; d <= 6; d++) if (a.toFixed(d) !== b.toFixed(d)) return d;
  return 6;
}

function verdictText(r) {
  if (r.too_poor) return `too poor to identify: ${r.too_poor}`;
  if (r.mode === "faces" || r.statistic === null || r.statistic === undefined) {
    if (r.score === null) return "unknown (no one to compare with)";
    const d = apart(r.score, r.threshold);
    return r.unknown ? `no match (best ${r.score.toFixed(d)} < 1:1 threshold ${r.threshold.toFixed(d)})`
                     : `${r.identity ?? "match"} (${r.score.toFixed(d)} ≥ 1:1 threshold ${r.threshold.toFixed(d)})`;
  }
  const d = apart(r.statistic, r.threshold);
  const runner = r.runner_up ? `; runner-up ${r.runner_up.identity}` : "";
  if (r.unknown) {
    return `unknown (statistic ${r.statistic.toFixed(d)} < threshold ${r.threshold.toFixed(d)}, ` +
           `${(r.threshold - r.statistic).toFixed(d)} below; best face ${r.score.toFixed(3)}${runner})`;
  }
  return `${r.identity} (best face ${r.score.toFixed(3)}; statistic ${r.statistic.toFixed(d)} ≥ threshold ` +
         `${r.threshold.toFixed(d)}${runner})`;
}

function showAnswers(answer) {
  const img = $("photo");
  const scale = img.clientWidth / (answer.photo.width || img.naturalWidth || 1);
  answer.results.forEach((r, i) => {
    const [x1, y1, x2, y2] = r.face.box;
    const label = r.too_poor ? "too poor" : r.unknown ? "unknown" : r.identity;
    // the label stays over the photo (a long name ends in "…", the whole of it is in the list and the title)
    const tag = el("span", { textContent: `${i + 1}. ${label}`, title: `${i + 1}. ${label}` });
    tag.style.maxWidth = `${Math.max(40, img.clientWidth - x1 * scale)}px`;
    const box = el("div", { className: r.unknown ? "box unknown" : "box" }, tag);
    Object.assign(box.style, { left: `${x1 * scale}px`, top: `${y1 * scale}px`, width: `${(x2 - x1) * scale}px`,
                               height: `${(y2 - y1) * scale}px` });
    box.dataset.identity = label;
    $("photo-frame").append(box);
    const candidates = el("div", { className: "candidates" });
    for (const c of r.candidates) {
      const template = c.template_score === null || c.template_score === undefined ? "" : `, template ${c.template_score.toFixed(3)}`;
      const who = c.identity ?? `face ${c.face_id}`;
      const open = crop(c.face_id, 96);
      open.title = `${who}: open the photo`;
      open.onclick = () => showFace(c.face_id);
      candidates.append(el("div", { className: "candidate" }, open,
        el("div", { className: "name", textContent: who, title: who }),
        el("div", { className: "muted", textContent: `face ${c.score.toFixed(3)}${template}` })));
    }
    const item = el("li", { className: "answer" },
      el("strong", { className: "verdict", textContent: verdictText(r) }),
      el("div", { className: "muted", textContent: r.too_poor ? "" : "nearest:" }), candidates);
    if (!r.too_poor) {
      const where = el("button", { textContent: "Where else does this face appear?", className: "where-else" });
      const found = el("div", { className: "elsewhere" });
      where.onclick = () => whereElse(i, found, where);
      item.append(where, found);
    }
    $("answers").append(item);
  });
}

// The nearest gallery faces of one face of the searched photo, one by one (`gallery search --faces`).
async function whereElse(index, into, button) {
  if (!searchedFile) return;
  button.disabled = true;
  const form = new FormData();
  form.append("file", searchedFile);
  form.append("k", "12");
  form.append("faces", "true");
  try {
    const answer = await api("/v1/search", { method: "POST", body: form });
    const r = answer.results[index];
    into.replaceChildren(similarFaces(r, "the 1:1 threshold"));
  } catch (error) { say(String(error.message || error)); }
  button.disabled = false;
}

// Faces mode answers: each face with who it is, where, and whether it passes the 1:1 threshold.
function similarFaces(r, thresholdName) {
  const same = r.candidates.filter((c) => c.above_threshold).length;
  const grid = el("div", { className: "faces similar" });
  for (const c of r.candidates) {
    const who = c.identity ?? "no name";
    const img = crop(c.face_id, 96);
    img.title = `${c.photo}: open the photo`;
    img.onclick = () => showFace(c.face_id);
    const face = el("div", { className: c.above_threshold ? "face same" : "face", title: c.photo }, img,
      el("div", { className: "name", textContent: who, title: who }),
      el("div", { className: "similarity", textContent: `${c.score.toFixed(3)}${c.above_threshold ? " ✓" : ""}` }));
    face.dataset.faceId = c.face_id;
    grid.append(face);
  }
  const head = r.candidates.length
    ? `${plural(r.candidates.length, "nearest face")}; ${same} at or above ${thresholdName} ` +
      `${r.threshold.toFixed(3)} (✓: likely the same person)`
    : "No other face in the gallery.";
  return el("div", {}, el("div", { className: "muted", textContent: head }), grid);
}

// One gallery face: its whole photo with the face outlined, where else it appears, and what to do with it.
async function showFace(faceId) {
  const dialog = $("face-dialog");
  const body = $("face-body");
  body.replaceChildren(el("p", { className: "muted", textContent: "Loading…" }));
  if (!dialog.open) dialog.showModal();
  try {
    const f = await api(`/v1/faces/${faceId}`);
    $("face-title").textContent = `${f.identity ?? "No name"} · face ${faceId}`;
    const photo = picture(`/v1/faces/${faceId}/photo?max_side=720`, `the photo of face ${faceId}`);
    photo.className = "whole-photo";
    const where = el("button", { textContent: "Where else does this face appear?", className: "where-else" });
    const found = el("div", { className: "elsewhere" });
    where.onclick = async () => {
      where.disabled = true;
      try {
        const r = await api(`/v1/faces/${faceId}/similar?k=12`);
        found.replaceChildren(similarFaces(r, "the 1:1 threshold"));
      } catch (error) { found.replaceChildren(el("p", { textContent: String(error.message || error) })); }
      where.disabled = false;
    };
    body.replaceChildren(photo, el("div", { className: "path muted", textContent: f.photo }),
                         el("div", { className: "actions" }, where, moveControls([faceId], f.identity, () => {
                           dialog.close();
                           refreshOpenPerson();
                         })), found);
  } catch (error) { body.replaceChildren(el("p", { textContent: String(error.message || error) })); }
}

// --- people -------------------------------------------------------------------------------

// Opens a detail panel where the user is looking: on its own line right below the row of cards that
// holds the card clicked, and scrolled into view when it is not.
function placeBelow(card, detail) {
  let last = card;
  for (let next = card.nextElementSibling; next && next.classList.contains("card") &&
       next.offsetTop === card.offsetTop; next = next.nextElementSibling) last = next;
  last.after(detail);
  detail.hidden = false;
  detail.scrollIntoView({ block: "nearest" });
}

// Panels live among the cards while open; before the cards are redrawn they go back home, closed.
function closePanels() {
  for (const id of ["cluster-detail", "identity-detail"]) {
    const panel = $(id);
    panel.hidden = true;
    panel.replaceChildren();
    $("page-people").append(panel);
  }
  openPerson = null;
}

// Move faces to another person (new or existing: the names on the page are offered) or take their
// name away; `ids()` says which faces when the button is pressed.
function moveControls(ids, current, done) {
  const input = el("input", { type: "text", className: "move-to", placeholder: "another person" });
  input.setAttribute("list", "people-names");
  const move = el("button", { textContent: "Move to", className: "move" });
  const unname = el("button", { textContent: "Remove the name", className: "unname", disabled: !current });
  const send = async (name) => {
    const faceIds = typeof ids === "function" ? ids() : ids;
    if (!faceIds.length) return say("Select faces first (the boxes under them).");
    try {
      await api("/v1/faces/relabel", { method: "POST", json: { face_ids: faceIds, name } });
      say(name ? `${plural(faceIds.length, "face")} moved to '${name}'.`
               : `${plural(faceIds.length, "face")} no longer '${current}'.`, true);
      done();
    } catch (error) { say(String(error.message || error)); }
  };
  move.onclick = () => {
    const name = input.value.trim();
    if (!name) return say("Type the name of the person to move them to.");
    if (name === current) return say(`They are '${current}' already.`);
    send(name);
  };
  unname.onclick = () => send(null);
  return el("span", { className: "move-controls" }, move, " ", input, " ", unname);
}

// Clustering runs as a server job: start it, follow it, then show the groups it found.
async function findGroups() {
  $("group-button").disabled = true;
  try {
    let job = await api("/v1/clusters/run", { method: "POST", json: {} });
    while (job.state === "queued" || job.state === "running") {
      say(`Finding groups… ${job.progress ? job.progress.message || job.progress.stage : ""}`, true);
      await new Promise((resolve) => setTimeout(resolve, 500));
      job = await api(`/v1/jobs/${job.job}`);
    }
    if (job.state === "failed") throw new Error(`${job.error.error}: ${job.error.detail}`);
    const n = job.result.clusters;
    say(`${n} group${n === 1 ? "" : "s"} of ${job.result.clustered_faces} faces in all.`, true);
    await loadPeople();
  } catch (error) { say(String(error.message || error)); }
  $("group-button").disabled = false;
}

async function loadPeople() {
  identitiesOffset = 0;
  selected.clear();
  updateMergeBar();
  closePanels();
  $("identities").replaceChildren();
  $("people-names").replaceChildren();
  $("names-without-faces").replaceChildren();
  $("without-faces").hidden = true;
  await Promise.all([loadClusters(), loadIdentities()]);
}

async function loadClusters() {
  $("clusters").replaceChildren();
  try {
    const clusters = await api("/v1/clusters?min_size=2");
    $("clusters-note").textContent = clusters.length ? "" : "No unnamed groups.";
    for (const c of clusters) $("clusters").append(clusterCard(c));
  } catch (error) {
    $("clusters-note").textContent = String(error.message || error);
  }
}

function clusterCard(c) {
  const input = el("input", { type: "text", placeholder: c.suggestion ? c.suggestion.identity : "name",
                              className: "cluster-name" });
  const name = el("button", { textContent: "Name", className: "name-cluster" });
  name.onclick = async () => {
    const value = input.value.trim() || (c.suggestion ? c.suggestion.identity : "");
    if (!value) return say("Type a name first.");
    try {
      // strict: faces far from the rest of the group keep no name until a person has looked at them
      const r = await api(`/v1/clusters/${c.cluster}/name`, { method: "POST", json: { name: value, strict: true } });
      const far = r.left_unnamed ? ` ${r.left_unnamed} face${r.left_unnamed === 1 ? "" : "s"} far from the rest ` +
                                   `of the group left unnamed: check them below.` : "";
      say(`Named ${r.faces_labeled} faces '${r.name}'${r.merged ? " (joined the existing person)" : ""}.${far}`, true);
      await loadPeople();
      if (r.left_unnamed) await showCluster(c.cluster);
    } catch (error) { say(String(error.message || error)); }
  };
  const show = el("button", { textContent: "Faces" });
  show.onclick = () => showCluster(c.cluster);
  const hint = c.suggestion ? `looks like ${c.suggestion.identity} (${c.suggestion.score.toFixed(2)})` : "";
  const card = el("div", { className: "card cluster" }, crop(c.representative_face),
    el("div", { className: "title", textContent: `group ${c.cluster} · ${c.size} faces` }),
    el("div", { className: "muted", textContent: hint }), input, name, " ", show);
  card.dataset.cluster = c.cluster;
  return card;
}

async function showCluster(id) {
  const detail = $("cluster-detail");
  try {
    const c = await api(`/v1/clusters/${id}`);  // doubtful faces first, then farthest from the rest
    const faces = el("div", { className: "faces" });
    for (const f of c.faces) {
      const reject = el("button", { textContent: "✕", title: "not this person" });
      reject.onclick = async () => {
        try {
          await api(`/v1/clusters/${id}/reject`, { method: "POST", json: { face_ids: [f.face_id] } });
          say(`Face ${f.face_id} taken out of group ${id}.`, true);
          showCluster(id);
        } catch (error) { say(String(error.message || error)); }
      };
      const face = el("div", { className: f.doubtful ? "face doubtful" : "face",
                               title: `face ${f.face_id}: similarity to the rest ${f.similarity.toFixed(3)}` +
                                      (f.doubtful ? " (far from the rest: is it the same person?)" : "") },
                      crop(f.face_id, 96), reject,
                      el("div", { className: "similarity", textContent: f.similarity.toFixed(2) }));
      face.dataset.faceId = f.face_id;
      faces.append(face);
    }
    const split = el("button", { textContent: "Split this group" });
    split.onclick = async () => {
      try {
        const r = await api(`/v1/clusters/${id}/split`, { method: "POST", json: {} });
        say(`Group ${id} split into ${r.into.length} groups.`, true);
        loadPeople();
      } catch (error) { say(String(error.message || error)); }
    };
    const doubtful = c.doubtful ? `, ${c.doubtful} far from the rest first (red)` : "";
    detail.replaceChildren(panelHead(`Group ${id}: ${c.size} faces${doubtful} (✕ takes a face out)`, detail),
                           faces, split);
    const card = document.querySelector(`.card.cluster[data-cluster="${id}"]`);
    if (card) placeBelow(card, detail);
    else detail.hidden = false;
  } catch (error) { say(String(error.message || error)); }
}

function panelHead(text, panel) {
  const close = el("button", { textContent: "Close", className: "close", title: "close this panel" });
  close.onclick = () => { panel.hidden = true; panel.replaceChildren(); if (panel.id === "identity-detail") openPerson = null; };
  return el("div", { className: "panel-head" }, el("h3", { textContent: text }), close);
}

async function loadIdentities() {
  try {
    const page = await api(`/v1/identities?offset=${identitiesOffset}&limit=60`);
    for (const p of page.identities) {
      if (p.faces === 0) {  // every face of the name was deleted (or moved by a sync or a repair): apart
        $("names-without-faces").append(el("li", { textContent: p.identity }));
        $("without-faces").hidden = false;
        continue;
      }
      $("identities").append(identityCard(p));
      $("people-names").append(el("option", { value: p.identity }));
    }
    identitiesOffset += page.identities.length;
    $("more-identities").hidden = identitiesOffset >= page.total;
  } catch (error) { say(String(error.message || error)); }
}

function identityCard(p) {
  const pick = el("input", { type: "checkbox", title: "select to merge" });
  const card = el("div", { className: "card identity" }, p.face_id ? crop(p.face_id) : "",
    el("div", { className: "title", textContent: p.identity }),
    el("label", {}, pick, ` ${p.faces} faces · select`));
  const open = el("button", { textContent: "Faces", className: "open-faces" });
  open.onclick = () => showIdentity(p.identity_id, p.identity, "faces");
  const photos = el("button", { textContent: "Photos", className: "open-photos" });
  photos.onclick = () => showIdentity(p.identity_id, p.identity, "photos");
  card.append(" ", open, " ", photos);
  card.dataset.identity = p.identity;
  card.dataset.identityId = p.identity_id;
  pick.onchange = () => {
    pick.checked ? selected.add(p.identity) : selected.delete(p.identity);
    card.classList.toggle("selected", pick.checked);
    updateMergeBar();
  };
  return card;
}

function updateMergeBar() {
  $("merge-button").disabled = selected.size < 2;
  $("merge-count").textContent = selected.size ? `${selected.size} selected: ${[...selected].join(", ")}`
                                              : "Select two or more people to merge them.";
  if (selected.size && !$("merge-into").value) $("merge-into").placeholder = [...selected][0];
}

async function merge() {
  const into = $("merge-into").value.trim() || [...selected][0];
  try {
    const r = await api("/v1/identities/merge", { method: "POST", json: { names: [...selected], into } });
    say(`Merged into '${r.into}' (${r.faces} faces).`, true);
    $("merge-into").value = "";
    await loadPeople();
  } catch (error) { say(String(error.message || error)); }
}

// People are opened by id: a name may hold any character, "/" included. The panel opens below the
// person's card: their faces (crops; ✕ takes the name off one; select some to move them to another
// person) or their photos (each whole, the face outlined). A face or photo opens in the face dialog.
let openPerson = null;

function refreshOpenPerson() {
  if (openPerson) showIdentity(openPerson.id, openPerson.name, openPerson.view);
}

async function showIdentity(id, name, view = "faces") {
  const detail = $("identity-detail");
  try {
    const p = await api(`/v1/identities/id/${id}`);
    openPerson = { id, name: p.identity, view };
    name = p.identity;
    const switcher = el("span", { className: "views" });
    for (const [key, label] of [["faces", "Faces"], ["photos", "Photos"]]) {
      const b = el("button", { textContent: label, className: key === view ? "view active" : "view" });
      b.dataset.view = key;
      b.onclick = () => showIdentity(id, name, key);
      switcher.append(b);
    }
    const low = p.faces.filter((f) => f.quality && !f.quality.ok).length;
    const title = view === "faces"
      ? `${name}: ${p.faces.length} faces (✕ rejects a face)` + (low ? `; ${low} below the quality gate (not in the template)` : "")
      : `${name}: ${plural(new Set(p.faces.map((f) => f.photo)).size, "photo")}`;
    const body = view === "faces" ? personFaces(p, id, name) : personPhotos(p);
    detail.replaceChildren(panelHead(title, detail), switcher, body);
    const card = document.querySelector(`.card.identity[data-identity-id="${id}"]`);
    if (card) placeBelow(card, detail);
    else detail.hidden = false;
  } catch (error) { say(String(error.message || error)); }
}

function personFaces(p, id, name) {
  const faces = el("div", { className: "faces" });
  const picked = new Set();
  for (const f of p.faces) {
    const reject = el("button", { textContent: "✕", title: "not this person: remove the name from this face" });
    reject.onclick = async () => {
      try {
        await api(`/v1/faces/${f.face_id}/relabel`, { method: "POST", json: { name: null } });
        say(`Face ${f.face_id} is no longer '${name}'.`, true);
        showIdentity(id, name);
      } catch (error) { say(String(error.message || error)); }
    };
    const pick = el("input", { type: "checkbox", className: "pick", title: "select this face" });
    pick.onchange = () => { pick.checked ? picked.add(f.face_id) : picked.delete(f.face_id); };
    const img = crop(f.face_id, 96);
    img.title = `${f.photo}: open the photo`;
    img.onclick = () => showFace(f.face_id);
    const poor = f.quality && !f.quality.ok;
    const face = el("div", { className: poor ? "face low-quality" : "face", title: poor ? f.quality.issue : f.photo },
      img, reject, el("label", { className: "pick-label" }, pick, " select"),
      poor ? el("div", { className: "quality", textContent: "low quality" }) : "");
    face.dataset.faceId = f.face_id;
    faces.append(face);
  }
  const bar = el("div", { className: "panel-actions" }, el("span", { className: "muted", textContent: "Selected faces: " }),
                 moveControls(() => [...picked], name, refreshOpenPerson));
  return el("div", {}, faces, bar);
}

function personPhotos(p) {
  const grid = el("div", { className: "photos" });
  const seen = new Set();
  for (const f of p.faces) {
    if (seen.has(f.photo)) continue;
    seen.add(f.photo);
    const img = picture(`/v1/faces/${f.face_id}/photo?max_side=360`, `photo of face ${f.face_id}`);
    img.onclick = () => showFace(f.face_id);
    const tile = el("figure", { className: "photo", title: f.photo }, img,
                    el("figcaption", { textContent: fileName(f.photo) }));
    tile.dataset.faceId = f.face_id;
    grid.append(tile);
  }
  return grid;
}

// --- wiring -------------------------------------------------------------------------------

function showPage(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.page === name);
  $("page-search").hidden = name !== "search";
  $("page-people").hidden = name !== "people";
  say("");
  if (name === "people") loadPeople();
}

async function loadStatus() {
  try {
    const s = await api("/v1/status");
    const threshold = typeof s.threshold === "number" ? `threshold ${s.threshold.toFixed(3)}` : "no threshold yet";
    $("gallery-status").textContent = `${plural(s.identities, "person").replace(/persons$/, "people")} · ` +
                                      `${plural(s.faces, "face")} · ${threshold}`;
  } catch (error) { say(String(error.message || error)); }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll(".tab")) tab.onclick = () => showPage(tab.dataset.page);
  $("key-button").onclick = askKey;
  $("key-form").addEventListener("submit", (event) => {
    if (event.submitter && event.submitter.value === "save") {
      localStorage.setItem(KEY, $("key-input").value.trim());
      loadStatus();
    }
  });
  $("photo-input").onchange = (event) => {
    const file = event.target.files[0];
    event.target.value = "";  // choosing the same photo again searches again
    if (file) searchPhoto(file);
  };
  const drop = $("drop");
  drop.ondragover = (event) => { event.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) searchPhoto(event.dataTransfer.files[0]);
  };
  $("merge-button").onclick = merge;
  $("group-button").onclick = findGroups;
  $("more-identities").onclick = loadIdentities;
  $("face-close").onclick = () => $("face-dialog").close();
  loadStatus();
});
