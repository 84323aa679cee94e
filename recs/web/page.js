// recs serve: look-ups on the operator page, against the JSON API of the same server.
// Only DOM APIs and fetch: no libraries, nothing loaded from elsewhere. The page's cookie
// (when the server has a token) goes along with every same-origin fetch.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

// Text from the catalogue is data: each piece goes in its own <bdi> (a right-to-left
// override in a title cannot reorder the ids around it), runs of combining marks are cut to
// three (500 of them would paint over the rows above), and a title is cut to MAX_TITLE
// characters (the whole of it in the tooltip).
const MAX_TITLE = 300;

function tame(text) {
  return String(text).replace(/(\p{M}{3})\p{M}+/gu, "$1");
}

function bdi(text) {
  const full = tame(text);
  const chars = Array.from(full);
  const shown = chars.length > MAX_TITLE ? chars.slice(0, MAX_TITLE).join("") + "…" : full;
  const node = el("bdi", { class: "data" }, shown);
  if (shown !== full) node.title = full.slice(0, 5000);
  return node;
}

function name(item) {
  return item.title ? bdi(item.title) : `resource ${item.resource_id}`;
}

function listTable(items, withReasons) {
  const table = el("table", { class: "list" });
  items.forEach((item, i) => {
    const cell = el("td", { class: "title" }, name(item));
    if (item.subject) cell.append(el("span", { class: "subject" }, " — ", bdi(item.subject)));
    if (withReasons && item.because && item.because.length) {
      const why = el("div", { class: "because" }, "because you viewed ");
      item.because.forEach((b, j) => {
        why.append(j ? ", " : "", name(b), ` (${Math.round(b.share * 100)} %)`);
      });
      cell.append(why);
    }
    table.append(el("tr", {}, el("td", {}, `${i + 1}.`), cell,
                    el("td", { class: "score" }, item.score.toFixed(3)),
                    el("td", { class: "id" }, `[${item.resource_id}]`)));
  });
  return table;
}

function show(target, ...nodes) {
  target.replaceChildren(...nodes);
}

async function similarTo(lang, id, target) {
  const body = await getJSON(`/v1/${encodeURIComponent(lang)}/resources/${id}/similar?n=10`);
  const heading = body.resource ? [bdi(body.resource.title), ` [${id}]`] : [`resource ${id}`];
  show(target, el("h3", {}, "Similar to ", ...heading), listTable(body.items, false));
}

async function lookUpResource(form, target) {
  const lang = form.lang.value;
  const q = form.q.value.trim();
  if (/^\d+$/.test(q)) return similarTo(lang, q, target);
  const found = await getJSON(`/v1/${encodeURIComponent(lang)}/resources?q=` +
                              `${encodeURIComponent(q)}&n=10`);
  if (!found.items.length) throw new Error(`no title matches "${tame(q)}"`);
  const exact = found.items.find(item => item.title.toLowerCase() === q.toLowerCase());
  if (exact || found.items.length === 1) {
    return similarTo(lang, (exact || found.items[0]).resource_id, target);
  }
  const choices = el("ul", { class: "matches" });
  for (const item of found.items) {
    const link = el("a", { href: "#" }, bdi(item.title), ` [${item.resource_id}]`);
    link.addEventListener("click", event => {
      event.preventDefault();
      similarTo(lang, item.resource_id, target).catch(err => failed(target, err));
    });
    choices.append(el("li", {}, link));
  }
  show(target, el("h3", {}, "Titles with ", bdi(q)), choices);
}

async function lookUpUser(form, target) {
  const lang = form.lang.value;
  const user = form.q.value;
  const body = await getJSON(`/v1/${encodeURIComponent(lang)}/users/` +
                             `${encodeURIComponent(user)}/explain?n=10`);
  const views = el("ul", { class: "views" });
  for (const v of body.views) views.append(el("li", {}, name(v), ` [${v.resource_id}]: ${v.count}`));
  show(target, el("h3", {}, "For ", bdi(user), ` (${body.source})`), listTable(body.items, true),
       el("h3", {}, `Viewed (${body.views.length})`), views);
}

function failed(target, err) {
  show(target, el("p", { class: "error" }, err.message));
}

function wire(formId, targetId, lookUp) {
  const form = document.getElementById(formId);
  const target = document.getElementById(targetId);
  if (!form || !target) return;
  form.addEventListener("submit", event => {
    event.preventDefault();
    show(target, el("p", {}, "…"));
    lookUp(form, target).catch(err => failed(target, err));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wire("resource-form", "resource-result", lookUpResource);
  wire("user-form", "user-result", lookUpUser);
});
