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

// Face crops need the key too, so they are fetched and shown as object URLs.
function crop(faceId, size = 160) {
  const img = el("img", { alt: `face ${faceId}` });
  api(`/v1/faces/${faceId}/crop?size=${size}`).then((blob) => { img.src = URL.createObjectURL(blob); })
    .catch(() => { img.alt = "(no crop)"; });
  return img;
}

// --- who is this? -------------------------------------------------------------------------

async function searchPhoto(file) {
  say("Searching…", true);
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
    say(`${answer.results.length} face(s): ${named} named, ${answer.results.length - named - poor} unknown` +
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
    const box = el("div", { className: r.unknown ? "box unknown" : "box" }, el("span", { textContent: `${i + 1}. ${label}` }));
    Object.assign(box.style, { left: `${x1 * scale}px`, top: `${y1 * scale}px`, width: `${(x2 - x1) * scale}px`,
                               height: `${(y2 - y1) * scale}px` });
    box.dataset.identity = label;
    $("photo-frame").append(box);
    const candidates = el("div", { className: "candidates" });
    for (const c of r.candidates) {
      const template = c.template_score === null || c.template_score === undefined ? "" : `, template ${c.template_score.toFixed(3)}`;
      candidates.append(el("div", { className: "candidate" }, crop(c.face_id, 96),
        el("div", { textContent: `${c.identity ?? "face " + c.face_id}: face ${c.score.toFixed(3)}${template}` })));
    }
    $("answers").append(el("li", { className: "answer" },
      el("strong", { textContent: verdictText(r) }),
      el("div", { className: "muted", textContent: r.too_poor ? "" : "nearest:" }), candidates));
  });
}

// --- people -------------------------------------------------------------------------------

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
  $("identities").replaceChildren();
  $("cluster-detail").hidden = true;
  $("identity-detail").hidden = true;
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
    detail.replaceChildren(el("h3", { textContent: `Group ${id}: ${c.size} faces${doubtful} (✕ takes a face out)` }),
                           faces, split);
    detail.hidden = false;
  } catch (error) { say(String(error.message || error)); }
}

async function loadIdentities() {
  try {
    const page = await api(`/v1/identities?offset=${identitiesOffset}&limit=60`);
    for (const p of page.identities) $("identities").append(identityCard(p));
    identitiesOffset += page.identities.length;
    $("more-identities").hidden = identitiesOffset >= page.total;
  } catch (error) { say(String(error.message || error)); }
}

function identityCard(p) {
  const pick = el("input", { type: "checkbox", title: "select to merge" });
  const card = el("div", { className: "card identity" }, p.face_id ? crop(p.face_id) : "",
    el("div", { className: "title", textContent: p.identity }),
    el("label", {}, pick, ` ${p.faces} faces · select`));
  const open = el("button", { textContent: "Faces" });
  open.onclick = () => showIdentity(p.identity_id, p.identity);
  card.append(" ", open);
  card.dataset.identity = p.identity;
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

// People are opened by id: a name may hold any character, "/" included.
async function showIdentity(id, name) {
  const detail = $("identity-detail");
  try {
    const p = await api(`/v1/identities/id/${id}`);
    const faces = el("div", { className: "faces" });
    for (const f of p.faces) {
      const reject = el("button", { textContent: "✕", title: "not this person: remove the name from this face" });
      reject.onclick = async () => {
        try {
          await api(`/v1/faces/${f.face_id}/relabel`, { method: "POST", json: { name: null } });
          say(`Face ${f.face_id} is no longer '${name}'.`, true);
          showIdentity(id, name);
        } catch (error) { say(String(error.message || error)); }
      };
      const poor = f.quality && !f.quality.ok;
      faces.append(el("div", { className: poor ? "face low-quality" : "face", title: poor ? f.quality.issue : "" },
        crop(f.face_id, 96), reject, poor ? el("div", { className: "quality", textContent: "low quality" }) : ""));
    }
    const low = p.faces.filter((f) => f.quality && !f.quality.ok).length;
    detail.replaceChildren(el("h3", { textContent: `${name}: ${p.faces.length} faces (✕ rejects a face)` +
      (low ? `; ${low} below the quality gate (not in the template)` : "") }), faces);
    detail.hidden = false;
  } catch (error) { say(String(error.message || error)); }
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
    $("gallery-status").textContent = `${s.identities} people · ${s.faces} faces · threshold ${s.threshold?.toFixed(3)}`;
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
  loadStatus();
});
