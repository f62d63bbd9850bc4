// vidcap gallery: pages over rows stored as script chunks (data/chunk-NNNNN.js call VG_CHUNK), so the
// folder works from file:// with no server. data/meta.js (VG_META) counts every facet value per chunk:
// a status/label/tag filter skips chunks that cannot match without loading them, and with a single
// facet and no search the page's position is known exactly. Only a search scans chunks in order, and
// only as far as the page asked for. Every text from the data goes in with textContent, never as HTML.
"use strict";
(function () {
  const META = window.VG_META;
  const $ = (id) => document.getElementById(id);
  const KEEP_CHUNKS = 24; // chunks kept in memory (least recently used go first)
  const chunkRows = new Map();
  const waiting = new Map();
  const matchCounts = new Map(); // filter -> matches per chunk (undefined: not scanned yet)
  const idOf = new Map(META.values.map((v, i) => [v.facet + "\u0000" + v.value, i]));
  const state = { q: "", status: "", label: "", tag: "", page: 0, size: META.pageSize };
  let renderToken = 0;
  let renders = 0;
  window.VG_LOADED = []; // chunk numbers in the order they were fetched (for tests and benchmarks)

  window.VG_CHUNK = function (number, rows) {
    const entry = waiting.get(number);
    if (entry) entry.resolve(rows);
  };

  function loadChunk(number) {
    if (chunkRows.has(number)) {
      const rows = chunkRows.get(number);
      chunkRows.delete(number);
      chunkRows.set(number, rows);
      return Promise.resolve(rows);
    }
    if (waiting.has(number)) return waiting.get(number).promise;
    const entry = {};
    entry.promise = new Promise((resolve, reject) => { entry.resolve = resolve; entry.reject = reject; });
    waiting.set(number, entry);
    window.VG_LOADED.push(number);
    const script = document.createElement("script");
    script.src = "data/chunk-" + String(number).padStart(5, "0") + ".js";
    script.onerror = () => entry.reject(new Error("cannot load " + script.getAttribute("src") +
                                                  " (is the gallery folder complete?)"));
    document.head.appendChild(script);
    return entry.promise.then((rows) => {
      chunkRows.set(number, rows);
      while (chunkRows.size > KEEP_CHUNKS) chunkRows.delete(chunkRows.keys().next().value);
      return rows;
    }).finally(() => { waiting.delete(number); script.remove(); });
  }

  function tagParts(value) {
    const cut = value.indexOf("\u0001");
    return [value.slice(0, cut), value.slice(cut + 1)];
  }

  function selectedIds() {
    const ids = [];
    if (state.status) ids.push(idOf.get("status\u0000" + state.status));
    if (state.label) ids.push(idOf.get("label\u0000" + state.label));
    if (state.tag) {
      const [column, value] = tagParts(state.tag);
      ids.push(idOf.get("tag:" + column + "\u0000" + value));
    }
    return ids.map((id) => (id === undefined ? -1 : id));
  }

  // the most rows of chunk c that can match the facets (exact for one facet)
  function bound(c, ids) {
    const chunk = META.chunks[c];
    let most = chunk.n;
    for (const id of ids) most = Math.min(most, id < 0 ? 0 : chunk.f[id] || 0);
    return most;
  }

  function haystack(row) {
    if (row._h === undefined) {
      const tags = Object.values(row.g).map((list) => list.join(" ")).join(" ");
      row._h = [row.k, row.p, row.t, row.e, row.fe, row.l.join(" "), tags].join("\n").toLowerCase();
    }
    return row._h;
  }

  function matches(row) {
    if (state.status && row.s !== state.status) return false;
    if (state.label && !row.l.includes(state.label)) return false;
    if (state.tag) {
      const [column, value] = tagParts(state.tag);
      if (!(row.g[column] || []).includes(value)) return false;
    }
    return !state.q || haystack(row).includes(state.q.toLowerCase());
  }

  async function render() {
    const token = ++renderToken;
    document.body.dataset.ready = "0";
    const ids = selectedIds();
    const exact = !state.q && ids.length <= 1;
    const key = JSON.stringify([state.q.toLowerCase(), state.status, state.label, state.tag]);
    if (!matchCounts.has(key)) matchCounts.set(key, []);
    const counts = matchCounts.get(key);
    const start = state.page * state.size;
    const shown = [];
    let seen = 0;
    setMessage("loading…");
    for (let c = 0; c < META.chunks.length && shown.length < state.size; c++) {
      const most = bound(c, ids);
      if (most === 0) { counts[c] = 0; continue; }
      const known = exact ? most : counts[c];
      if (known !== undefined && seen + known <= start) { seen += known; continue; }
      let rows;
      try {
        rows = await loadChunk(c);
      } catch (err) {
        if (token === renderToken) fail(err);
        return;
      }
      if (token !== renderToken) return;
      const hits = rows.filter(matches);
      counts[c] = hits.length;
      for (const row of hits) {
        if (seen >= start && shown.length < state.size) shown.push(row);
        seen++;
      }
    }
    let total = null;
    let atLeast = 0;
    if (exact) {
      total = 0;
      for (let c = 0; c < META.chunks.length; c++) total += bound(c, ids);
    } else {
      let unknown = false;
      for (let c = 0; c < META.chunks.length; c++) {
        if (bound(c, ids) === 0) continue;
        if (counts[c] === undefined) unknown = true; else atLeast += counts[c];
      }
      if (!unknown) total = atLeast;
    }
    draw(shown, start, total, atLeast, token);
  }

  function draw(rows, start, total, atLeast, token) {
    const main = $("cards");
    main.replaceChildren(...rows.map(card));
    const end = start + rows.length;
    const of = total === null ? "at least " + atLeast.toLocaleString("en") : total.toLocaleString("en");
    $("pageinfo").textContent = rows.length
      ? "rows " + (start + 1).toLocaleString("en") + "–" + end.toLocaleString("en") + " of " + of
      : "no rows" + (state.page ? " on this page" : "");
    $("prev").disabled = state.page === 0;
    $("next").disabled = total === null ? rows.length < state.size : end >= total;
    setMessage(rows.length ? "" : (state.page ? "no more rows match" : "no rows match these filters"));
    const images = Array.from(main.querySelectorAll("img"));
    Promise.all(images.map((img) => (img.complete ? null : new Promise((done) => {
      img.addEventListener("load", done, { once: true });
      img.addEventListener("error", done, { once: true });
    })))).then(() => {
      if (token !== renderToken) return;
      renders += 1;
      document.body.dataset.renders = String(renders);
      document.body.dataset.ready = "1";
      window.VG_READY_MS = performance.now();
    });
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function card(row) {
    const node = el("article", "card " + row.s);
    node.dataset.key = row.k;
    node.dataset.status = row.s;
    const top = el("div", "top");
    const title = el("span", "key", row.k);
    title.title = row.p;
    top.append(title, el("span", "badge " + row.s, row.s));
    node.append(top);
    if (row.f.length) {
      const frames = el("div", "frames");
      row.f.forEach((src, i) => {
        const img = document.createElement("img");
        img.src = src;
        img.width = row.w;
        img.height = row.h;
        img.alt = "frame " + (i + 1) + " of " + row.f.length + " the model saw";
        img.addEventListener("error", () => img.replaceWith(el("span", "frames-error", "thumbnail file missing: " + src)));
        frames.append(img);
      });
      node.append(frames, el("div", "seen", "model saw " + row.seen));
    } else {
      const why = row.fe && row.fe === row.e ? "the video could not be read (reason below)" : (row.fe || "unknown reason");
      node.append(el("div", "frames-error", "no frames to show: " + why));
    }
    if (row.s === "error" || row.e) node.append(el("div", "reason", "error: " + (row.e || "no reason recorded")));
    if (row.t) node.append(el("p", "caption", row.t));
    if (row.l.length) {
      const chips = el("div", "chips labels");
      for (const label of row.l) chips.append(el("span", "chip label", label));
      node.append(chips);
    }
    for (const [column, tags] of Object.entries(row.g)) {
      const chips = el("div", "chips tags");
      chips.dataset.column = column;
      for (const tag of tags) {
        const chip = el("span", "chip");
        chip.append(el("b", "", column + " "), document.createTextNode(tag));
        chips.append(chip);
      }
      node.append(chips);
    }
    const details = el("details", "columns");
    details.append(el("summary", "", "all " + META.columns.length + " columns"));
    details.addEventListener("toggle", () => {
      if (!details.open || details.querySelector("table")) return;
      const table = el("table");
      META.columns.forEach((name, i) => {
        const tr = el("tr");
        tr.append(el("td", "", name), el("td", "", row.c[i]));
        table.append(tr);
      });
      details.append(table);
    });
    node.append(details);
    return node;
  }

  function setMessage(text) {
    $("message").className = "";
    $("message").textContent = text;
  }

  function fail(err) {
    $("message").className = "fail";
    $("message").textContent = String(err.message || err);
    console.error("vidcap gallery: " + (err.message || err));
  }

  function option(select, value, text) {
    const node = el("option", "", text);
    node.value = value;
    select.append(node);
    return node;
  }

  function fillControls() {
    const byFacet = {};
    META.values.forEach((v) => { (byFacet[v.facet] = byFacet[v.facet] || []).push(v); });
    const status = $("status");
    option(status, "", "all statuses (" + META.shown.toLocaleString("en") + ")");
    for (const v of byFacet.status || []) if (v.n) option(status, v.value, v.value + " (" + v.n.toLocaleString("en") + ")");
    const label = $("label");
    option(label, "", "all labels");
    for (const v of (byFacet.label || []).slice().sort((a, b) => b.n - a.n)) option(label, v.value, v.value + " (" + v.n + ")");
    label.hidden = !(byFacet.label || []).length;
    const tag = $("tag");
    option(tag, "", "all tags");
    for (const column of META.tagColumns) {
      const group = el("optgroup");
      group.label = column;
      for (const v of (byFacet["tag:" + column] || []).slice().sort((a, b) => b.n - a.n)) {
        option(group, column + "\u0001" + v.value, v.value + " (" + v.n + ")");
      }
      if (group.children.length) tag.append(group);
    }
    tag.hidden = tag.options.length < 2;
    const size = $("pagesize");
    for (const n of Array.from(new Set([META.pageSize, 24, 48, 96, 200])).sort((a, b) => a - b)) {
      option(size, String(n), n + " per page");
    }
  }

  function showState() {
    $("search").value = state.q;
    $("status").value = state.status;
    $("label").value = state.label;
    $("tag").value = state.tag;
    $("pagesize").value = String(state.size);
  }

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    state.q = p.get("q") || "";
    state.status = p.get("status") || "";
    state.label = p.get("label") || "";
    state.tag = p.get("tag") || "";
    state.page = Math.max(0, parseInt(p.get("page") || "1", 10) - 1 || 0);
    state.size = Math.max(1, parseInt(p.get("size") || String(META.pageSize), 10) || META.pageSize);
  }

  function go() {
    const p = new URLSearchParams();
    for (const name of ["q", "status", "label", "tag"]) if (state[name]) p.set(name, state[name]);
    if (state.page) p.set("page", String(state.page + 1));
    if (state.size !== META.pageSize) p.set("size", String(state.size));
    const hash = p.toString();
    if (location.hash.slice(1) === hash) render(); else location.hash = hash;
  }

  function start() {
    document.title = META.title;
    $("title").textContent = META.title;
    const parts = [META.shown.toLocaleString("en") + " rows shown of " + META.total.toLocaleString("en") +
                   " in " + META.source];
    if (META.where.length) parts.push("where " + META.where.join(" and ") + " (" + META.matched.toLocaleString("en") + " rows)");
    if (META.sample !== null) parts.push("random sample of " + META.sample + ", seed " + META.seed);
    parts.push("frames: " + META.plan, "built " + META.generated);
    $("summary").textContent = parts.join(" · ");
    fillControls();
    readHash();
    showState();
    let typing = null;
    $("search").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => { state.q = $("search").value.trim(); state.page = 0; go(); }, 250);
    });
    for (const name of ["status", "label", "tag"]) {
      $(name).addEventListener("change", () => { state[name] = $(name).value; state.page = 0; go(); });
    }
    $("pagesize").addEventListener("change", () => { state.size = parseInt($("pagesize").value, 10); state.page = 0; go(); });
    $("prev").addEventListener("click", () => { if (state.page > 0) { state.page -= 1; go(); } });
    $("next").addEventListener("click", () => { state.page += 1; go(); });
    window.addEventListener("hashchange", () => { readHash(); showState(); render(); });
    render();
  }

  if (!META) {
    document.body.textContent = "data/meta.js did not load: is the gallery folder complete?";
    console.error("vidcap gallery: data/meta.js did not load");
  } else {
    start();
  }
})();
