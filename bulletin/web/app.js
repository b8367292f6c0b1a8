// The vmvpn dashboard: one page, live from /api/v1/events?lan=L (Server-Sent Events: a
// snapshot of the LAN shown, then only what changed), drawn with plain SVG (topology,
// heat map), a canvas for the heat map of a large LAN, and uPlot (series). No build
// step, no framework: the file is served as written.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// A LAN with more hosts than this is drawn aggregated: hosts as dots, tunnels between
// subnets (and each unhealthy one), the heat map on a canvas.
const LARGE = 40;
const state = { ov: null, lan: null, metric: "p50", open: null, charts: [], openKey: "", es: null, alertsAt: 0 };

// ---- small helpers -------------------------------------------------------------------

function el(tag, attrs, ...kids) {
  const svg = ["svg", "g", "rect", "circle", "line", "text", "title", "defs", "pattern", "path", "linearGradient", "stop"].includes(tag);
  const e = svg ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k) e.appendChild(typeof k === "string" ? document.createTextNode(k) : k);
  return e;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

function human(x, unit) {
  if (x === null || x === undefined) return "–";
  const u = ["", "k", "M", "G", "T"];
  let i = 0;
  while (Math.abs(x) >= 1000 && i < u.length - 1) { x /= 1000; i++; }
  return (i === 0 ? String(Math.round(x)) : x.toFixed(1)) + " " + u[i] + unit;
}

// Same figures as the CLI: µs to ms with three decimals, ratios as percent with two.
function rttMs(us) { return us === null || us === undefined ? null : us / 1000; }
function fmtMs(us) { const v = rttMs(us); return v === null ? "–" : v.toFixed(3) + " ms"; }
function fmtPct(r) { return (r * 100).toFixed(2) + " %"; }

function lanView() {
  return state.ov ? state.ov.lan : null;
}

// ---- snapshot and deltas ---------------------------------------------------------------

// `list` with the entries of `gone` (keys) removed and `upserts` put in.
function merge(list, upserts, gone, key) {
  if (!(upserts && upserts.length) && !(gone && gone.length)) return list;
  const m = new Map(list.map(x => [key(x), x]));
  for (const g of gone || []) m.delete(g);
  for (const u of upserts || []) m.set(key(u), u);
  return [...m.values()];
}

const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

function applyDelta(d) {
  const ov = state.ov;
  ov.at_ms = d.at_ms;
  if (d.lans) ov.lans = d.lans;
  if (d.alerts) { ov.alerts = d.alerts; state.alertsAt = d.at_ms; }
  if (d.history) ov.history = d.history;
  const x = d.lan, l = ov.lan;
  if (!x || !l) return;
  if (x.subnets) l.subnets = x.subnets;
  l.hosts = merge(l.hosts, x.hosts, x.hosts_gone, h => h.name).sort(byName);
  l.links = merge(l.links, x.links, (x.links_gone || []).map(([f, t]) => f + "\u0000" + t), k => k.from + "\u0000" + k.to);
  l.pairs = merge(l.pairs, x.pairs, (x.pairs_gone || []).map(k => k.join("|")), p => [p.src_host, p.src_mac, p.dst_mac].join("|"))
    .sort((a, b) => (b.rate_bps || 0) - (a.rate_bps || 0) || b.bytes - a.bytes);
  if (x.services) l.services = x.services;
  l.vms = merge(l.vms, x.vms, x.vms_gone, v => v.mac)
    .sort((a, b) => (b.tx_rate_bps + b.rx_rate_bps) - (a.tx_rate_bps + a.rx_rate_bps));
}

function linkTitle(l) {
  return `${l.from} → ${l.to}\nRTT p50 ${fmtMs(l.rtt_p50_us)} · p99 ${fmtMs(l.rtt_p99_us)}\n` +
    `loss → ${fmtPct(l.loss_tx_ratio)} · ← ${fmtPct(l.loss_rx_ratio)}\n` +
    `rate → ${human(l.tx_rate_bps, "bit/s")} · ← ${human(l.rx_rate_bps, "bit/s")}\nhealth ${l.health}` +
    (l.path ? ` · path ${l.path}` : "");
}

const HEALTH_RANK = { ok: 0, unknown: 1, degraded: 2, down: 3 };

// Green through yellow to red over [0, 1].
function heat(f) {
  const x = Math.max(0, Math.min(1, f));
  return `hsl(${Math.round(120 * (1 - x))}, 70%, ${Math.round(48 + 8 * (1 - x))}%)`;
}

// Traffic is not good or bad: light to dark blue over [0, 1].
function volume(f) {
  const x = Math.max(0, Math.min(1, f));
  return `hsl(210, 75%, ${Math.round(94 - 34 * x)}%)`;
}

// ---- header ----------------------------------------------------------------------------

function renderHeader() {
  const ov = state.ov;
  document.getElementById("scope").textContent =
    ov.scope === "overlay" ? `overlay · bulletin ${ov.name.slice(0, 23)}…` : `host ${ov.name}`;
  const sel = document.getElementById("lan");
  const label = l => `${l.lan} · ${l.up}/${l.hosts} up${l.down ? ", " + l.down + " down" : ""}`;
  const labels = ov.lans.map(label);
  if ([...sel.options].map(o => o.textContent).join("\n") !== labels.join("\n")) {
    clear(sel);
    ov.lans.forEach((l, i) => sel.appendChild(el("option", { value: l.lan, text: labels[i] })));
  }
  if (ov.lan) { state.lan = ov.lan.lan; sel.value = state.lan; }
}

// ---- topology --------------------------------------------------------------------------

function hostTitle(h) {
  const age = h.reported_at_ms === null || h.reported_at_ms === undefined ? "no report"
    : h.state === "up" ? "reporting" : `last report ${((state.ov.at_ms - h.reported_at_ms) / 1000).toFixed(1)} s ago`;
  const id = h.id === null ? "" : "0x" + h.id.toString(16).padStart(8, "0");
  return `${h.name} ${id}\n${h.underlay} (${h.subnet})\n${h.state}, ${age}${h.forwarder ? "\ndesignated forwarder" : ""}`;
}

// Hosts by physical subnet.
function bySubnet(hosts) {
  const groups = new Map();
  for (const h of hosts) {
    const k = h.subnet || "unknown subnet";
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(h);
  }
  return groups;
}

function renderTopology(lan) {
  const svg = clear(document.getElementById("topology"));
  if (!lan || lan.hosts.length === 0) {
    svg.appendChild(el("text", { x: 380, y: 200, "text-anchor": "middle", class: "subnet-label", text: "no hosts registered on this LAN" }));
    return;
  }
  if (lan.hosts.length > LARGE) { renderTopologyLarge(svg, lan); return; }
  const W = 760, H = 420;
  const groups = bySubnet(lan.hosts);
  const keys = [...groups.keys()].sort();
  const pos = new Map();
  const circles = [];
  keys.forEach((k, i) => {
    const n = keys.length;
    const a = -Math.PI / 2 + (2 * Math.PI * i) / n;
    const cx = n === 1 ? W / 2 : W / 2 + W * 0.27 * Math.cos(a);
    const cy = n === 1 ? H / 2 : H / 2 + H * 0.25 * Math.sin(a);
    const hs = groups.get(k);
    const r = hs.length === 1 ? 0 : Math.min(90, 26 + 12 * hs.length);
    // Hosts of a subnet start across the line to the picture's centre, so that tunnels
    // to other subnets do not run through them.
    const start = n === 1 ? -Math.PI / 2 : a + Math.PI / 2;
    hs.forEach((h, j) => {
      const b = start + (2 * Math.PI * j) / hs.length;
      pos.set(h.name, [cx + r * Math.cos(b), cy + r * Math.sin(b)]);
    });
    const sn = lan.subnets.find(s => s.subnet === k);
    circles.push({ k, cx, cy, r: r + 40, df: sn ? sn.forwarder : null });
  });
  for (const c of circles) {
    svg.appendChild(el("circle", { class: "subnet", cx: c.cx, cy: c.cy, r: c.r }));
    svg.appendChild(el("text", { class: "subnet-label", x: c.cx, y: c.cy - c.r - 6, "text-anchor": "middle",
      text: `${c.k}${c.df ? " · DF " + c.df : ""}` }));
  }
  // One line per host pair, in the worst health either end reports.
  const pairs = new Map();
  for (const l of lan.links) {
    if (!pos.has(l.from) || !pos.has(l.to)) continue;
    const k = [l.from, l.to].sort().join("\u0000");
    if (!pairs.has(k)) pairs.set(k, []);
    pairs.get(k).push(l);
  }
  for (const ls of pairs.values()) {
    const worst = ls.reduce((w, l) => (HEALTH_RANK[l.health] ?? 1) > (HEALTH_RANK[w] ?? 1) ? l.health : w, "ok");
    const [a, b] = [ls[0].from, ls[0].to];
    const [x1, y1] = pos.get(a), [x2, y2] = pos.get(b);
    // Either end through a relay, else through a NAT: the pair's path is drawn as such.
    const path = ["relayed", "punched"].find(k => ls.some(l => l.path === k)) || (ls.find(l => l.path) || {}).path || "";
    svg.appendChild(el("line", { class: `tunnel ${worst}${path ? " " + path : ""}`, x1, y1, x2, y2, "data-from": a, "data-to": b, "data-path": path,
      onclick: () => openSeries({ kind: "tunnel", lan: lan.lan, from: a, to: b }) },
      el("title", { text: ls.map(linkTitle).join("\n\n") })));
  }
  for (const h of lan.hosts) {
    const [x, y] = pos.get(h.name);
    const g = el("g", { class: "host", "data-host": h.name, "data-state": h.state, "data-forwarder": String(h.forwarder) },
      el("title", { text: hostTitle(h) }),
      h.forwarder ? el("circle", { class: "df", cx: x, cy: y, r: 21 }) : null,
      el("circle", { cx: x, cy: y, r: 16 }),
      el("text", { x, y: y + 38, text: h.name }),
      h.forwarder ? el("text", { class: "df-label", x, y: y + 4, text: "DF" }) : null);
    svg.appendChild(g);
  }
}

// A large LAN: each subnet a circle of host dots; one line per subnet pair in the worst
// health of the tunnels between them, and a line for each unhealthy tunnel (at most 500).
function renderTopologyLarge(svg, lan) {
  const W = 760, H = 420;
  const groups = bySubnet(lan.hosts);
  const keys = [...groups.keys()].sort();
  const n = keys.length;
  const R = n === 1 ? 170 : Math.max(30, Math.min(110, 330 / Math.sqrt(n)));
  const pos = new Map(), centre = new Map(), subnetOf = new Map();
  keys.forEach((k, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / n;
    const cx = n === 1 ? W / 2 : W / 2 + (W / 2 - R - 30) * Math.cos(a);
    const cy = n === 1 ? H / 2 : H / 2 + (H / 2 - R - 20) * Math.sin(a);
    centre.set(k, [cx, cy]);
    const hs = groups.get(k);
    // Dots on a sunflower spiral fill the circle evenly, whatever their number.
    hs.forEach((h, j) => {
      const r = (R - 6) * Math.sqrt((j + 0.5) / hs.length), b = j * 2.39996;
      pos.set(h.name, [cx + r * Math.cos(b), cy + r * Math.sin(b)]);
      subnetOf.set(h.name, k);
    });
    const sn = lan.subnets.find(s => s.subnet === k);
    svg.appendChild(el("circle", { class: "subnet", cx, cy, r: R + 4 }));
    svg.appendChild(el("text", { class: "subnet-label", x: cx, y: cy - R - 10, "text-anchor": "middle",
      text: `${k} · ${hs.length} hosts${sn && sn.forwarder ? " · DF " + sn.forwarder : ""}` }));
  });
  const between = new Map(), bad = [];
  for (const l of lan.links) {
    const a = subnetOf.get(l.from), b = subnetOf.get(l.to);
    if (!a || !b) continue;
    if (l.health === "down" || l.health === "degraded") bad.push(l);
    if (a === b) continue;
    const k = [a, b].sort().join("\u0000");
    const w = between.get(k) || { a, b, worst: "ok", n: 0 };
    if ((HEALTH_RANK[l.health] ?? 1) > (HEALTH_RANK[w.worst] ?? 1)) w.worst = l.health;
    w.n++;
    between.set(k, w);
  }
  for (const w of between.values()) {
    const [x1, y1] = centre.get(w.a), [x2, y2] = centre.get(w.b);
    svg.appendChild(el("line", { class: `tunnel aggregate ${w.worst}`, x1, y1, x2, y2, "data-from": w.a, "data-to": w.b },
      el("title", { text: `${w.a} ↔ ${w.b}: ${w.n} tunnel directions, worst ${w.worst}` })));
  }
  for (const l of bad.slice(0, 500)) {
    const [x1, y1] = pos.get(l.from), [x2, y2] = pos.get(l.to);
    svg.appendChild(el("line", { class: `tunnel ${l.health}`, x1, y1, x2, y2, "data-from": l.from, "data-to": l.to,
      onclick: () => openSeries({ kind: "tunnel", lan: lan.lan, from: l.from, to: l.to }) }, el("title", { text: linkTitle(l) })));
  }
  for (const h of lan.hosts) {
    const [x, y] = pos.get(h.name);
    svg.appendChild(el("g", { class: "host small", "data-host": h.name, "data-state": h.state, "data-forwarder": String(h.forwarder) },
      el("title", { text: hostTitle(h) }),
      el("circle", { cx: x, cy: y, r: h.forwarder ? 6 : 4, class: h.forwarder ? "df-dot" : null })));
  }
}

// ---- heat map --------------------------------------------------------------------------

const METRICS = {
  p50: { label: "RTT p50", unit: "ms", value: l => rttMs(l.rtt_p50_us), fmt: v => v.toFixed(2) },
  p99: { label: "RTT p99", unit: "ms", value: l => rttMs(l.rtt_p99_us), fmt: v => v.toFixed(2) },
  loss: { label: "loss row → column", unit: "%", value: l => l.loss_tx_ratio * 100, fmt: v => v.toFixed(1) },
};

function renderHeat(lan) {
  const svg = clear(document.getElementById("heatmap"));
  const canvas = document.getElementById("heatcanvas");
  const legend = clear(document.getElementById("heat-legend"));
  const m = METRICS[state.metric];
  const names = lan ? lan.hosts.map(h => h.name) : [];
  const large = names.length > LARGE;
  svg.style.display = large ? "none" : "";
  canvas.hidden = !large;
  if (large) {
    const max = renderHeatCanvas(canvas, lan, names, m);
    drawScale(legend, m, max);
    return;
  }
  if (names.length < 2) {
    svg.setAttribute("width", 300); svg.setAttribute("height", 30);
    svg.appendChild(el("text", { x: 0, y: 20, text: "a heat map needs two hosts" }));
    return;
  }
  const link = new Map(lan.links.map(l => [l.from + "\u0000" + l.to, l]));
  const values = lan.links.map(m.value).filter(v => v !== null && !Number.isNaN(v));
  // The scale starts at 0 and reaches at least 1 ms or 1 %, so a quiet LAN stays green.
  const max = Math.max(1, ...values);
  const cs = Math.max(26, Math.min(64, Math.floor(520 / names.length)));
  const left = 10 + 8 * Math.max(...names.map(n => n.length)), top = left;
  svg.setAttribute("width", left + cs * names.length + 4);
  svg.setAttribute("height", top + cs * names.length + 4);
  svg.appendChild(el("defs", {}, el("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
    el("rect", { width: 6, height: 6, fill: "#f0f0f0" }), el("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#ccc", "stroke-width": 2 }))));
  names.forEach((n, i) => {
    svg.appendChild(el("text", { x: left - 6, y: top + i * cs + cs / 2 + 4, "text-anchor": "end", text: n }));
    svg.appendChild(el("text", { x: 0, y: 0, "text-anchor": "start",
      transform: `translate(${left + i * cs + cs / 2 + 4},${top - 6}) rotate(-60)`, text: n }));
  });
  names.forEach((from, i) => names.forEach((to, j) => {
    const x = left + j * cs, y = top + i * cs;
    const attrs = { x, y, width: cs, height: cs, "data-from": from, "data-to": to };
    if (from === to) { svg.appendChild(el("rect", { ...attrs, class: "cell self" })); return; }
    const l = link.get(from + "\u0000" + to);
    if (!l) {
      svg.appendChild(el("rect", { ...attrs, class: "cell none" }, el("title", { text: `${from} → ${to}\nno measurement reported` })));
      return;
    }
    const v = m.value(l);
    const down = l.health === "down";
    const cls = down ? "cell down" : "cell";
    const fill = down || v === null ? null : heat(v / max);
    const open = () => openSeries({ kind: "tunnel", lan: lan.lan, from, to });
    svg.appendChild(el("rect", { ...attrs, class: cls, fill, "data-value": v === null ? "" : String(v), onclick: open },
      el("title", { text: linkTitle(l) })));
    if (!down && v !== null && cs >= 34)
      svg.appendChild(el("text", { class: "cell-value", x: x + cs / 2, y: y + cs / 2 + 4, text: m.fmt(v) }));
  }));
  drawScale(legend, m, max);
}

// The colour scale.
function drawScale(legend, m, max) {
  const grad = el("linearGradient", { id: "scale" });
  for (let k = 0; k <= 10; k++) grad.appendChild(el("stop", { offset: `${k * 10}%`, "stop-color": heat(k / 10) }));
  legend.appendChild(el("defs", {}, grad));
  legend.appendChild(el("rect", { x: 0, y: 4, width: 240, height: 14, fill: "url(#scale)" }));
  legend.appendChild(el("text", { x: 0, y: 34, "font-size": 11, text: `0 ${m.unit}` }));
  legend.appendChild(el("text", { x: 240, y: 34, "font-size": 11, "text-anchor": "end", text: `${m.fmt(max)} ${m.unit}` }));
  legend.appendChild(el("rect", { x: 262, y: 4, width: 14, height: 14, fill: "#333" }));
  legend.appendChild(el("text", { x: 282, y: 15, "font-size": 11, text: "down" }));
  legend.appendChild(el("rect", { x: 322, y: 4, width: 14, height: 14, fill: "#f0f0f0", stroke: "#ccc" }));
  legend.appendChild(el("text", { x: 342, y: 15, "font-size": 11, text: "no data" }));
  legend.appendChild(el("text", { x: 120, y: 34, "font-size": 11, "text-anchor": "middle", text: m.label }));
}

// A large LAN's heat map: one pixel block per host pair on a canvas (40 000 SVG
// rectangles take seconds to lay out); the pointer tells which pair, a click opens it.
function renderHeatCanvas(canvas, lan, names, m) {
  const n = names.length;
  const cs = Math.max(2, Math.min(8, Math.floor(900 / n)));
  const left = 4, top = 4;
  canvas.width = left + cs * n + 4;
  canvas.height = top + cs * n + 4;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#f0f0f0";
  ctx.fillRect(left, top, cs * n, cs * n);
  const index = new Map(names.map((h, i) => [h, i]));
  const values = lan.links.map(m.value).filter(v => v !== null && !Number.isNaN(v));
  const max = Math.max(1, ...values.slice(0, 100000));
  let drawn = 0;
  for (const l of lan.links) {
    const i = index.get(l.from), j = index.get(l.to);
    if (i === undefined || j === undefined) continue;
    const v = m.value(l);
    ctx.fillStyle = l.health === "down" ? "#333" : v === null ? "#f0f0f0" : heat(v / max);
    ctx.fillRect(left + j * cs, top + i * cs, cs, cs);
    drawn++;
  }
  canvas.dataset.cells = String(drawn);
  const link = new Map(lan.links.map(l => [l.from + "\u0000" + l.to, l]));
  const at = e => {
    const r = canvas.getBoundingClientRect();
    const j = Math.floor((e.clientX - r.left - left) / cs), i = Math.floor((e.clientY - r.top - top) / cs);
    return i >= 0 && j >= 0 && i < n && j < n && i !== j ? [names[i], names[j]] : null;
  };
  canvas.onmousemove = e => {
    const p = at(e);
    const l = p && link.get(p[0] + "\u0000" + p[1]);
    canvas.title = p ? (l ? linkTitle(l) : `${p[0]} → ${p[1]}\nno measurement reported`) : "";
  };
  canvas.onclick = e => { const p = at(e); if (p) openSeries({ kind: "tunnel", lan: lan.lan, from: p[0], to: p[1] }); };
  return max;
}

// ---- traffic ---------------------------------------------------------------------------

function table(node, head, rows, onclick) {
  clear(node);
  node.appendChild(el("tr", {}, ...head.map(h => el("th", { class: h.num ? "num" : null, text: h.t }))));
  rows.forEach((r, i) => node.appendChild(el("tr", { class: onclick ? "clickable" : null, onclick: onclick ? () => onclick(i) : null },
    ...r.map((c, j) => el("td", { class: head[j].num ? "num" : null, text: c })))));
}

// A VM libvirt names shows as "name (address)".
function named(name, addr) {
  return name ? `${name} (${addr})` : addr;
}

function renderTraffic(lan) {
  const pairs = lan ? lan.pairs : [], vms = lan ? lan.vms : [];
  const matrix = clear(document.getElementById("matrix"));
  if (pairs.length === 0) {
    matrix.appendChild(el("p", { class: "empty", text: "No VM traffic counted yet." }));
  } else {
    // The busiest VMs as rows and columns, bytes in the cells, colour by rate.
    const top = vms.slice(0, 12).map(v => v.mac);
    const name = new Map(vms.map(v => [v.mac, v.name || v.ip || v.mac]));
    const cell = new Map(pairs.map(p => [p.src_mac + ">" + p.dst_mac, p]));
    const maxRate = Math.max(1, ...pairs.map(p => p.rate_bps || 0));
    const t = el("table", {});
    t.appendChild(el("tr", {}, el("th", { text: "from \\ to" }), ...top.map(m => el("th", { class: "num", text: name.get(m) }))));
    for (const s of top) {
      t.appendChild(el("tr", {}, el("th", { text: name.get(s) }), ...top.map(d => {
        const p = cell.get(s + ">" + d);
        if (!p) return el("td", { class: "cell", text: "" });
        return el("td", { class: "cell num", style: `background:${volume((p.rate_bps || 0) / maxRate)}`,
          title: `${named(p.src_name, p.src)} → ${named(p.dst_name, p.dst)}: ${human(p.bytes, "B")}, ${human(p.rate_bps, "bit/s")}`, text: human(p.bytes, "B") });
      })));
    }
    matrix.appendChild(t);
  }
  table(document.getElementById("pairs"),
    [{ t: "from" }, { t: "host" }, { t: "to" }, { t: "rate", num: true }, { t: "bytes", num: true }, { t: "packets", num: true }],
    pairs.slice(0, 20).map(p => [named(p.src_name, p.src), p.src_host, named(p.dst_name, p.dst), human(p.rate_bps, "bit/s"), human(p.bytes, "B"), String(p.packets)]));
  table(document.getElementById("vms"),
    [{ t: "VM" }, { t: "address" }, { t: "MAC" }, { t: "host" }, { t: "sends", num: true }, { t: "receives", num: true }, { t: "peak / mean", num: true }],
    vms.slice(0, 200).map(v => [v.name || "–", v.ip || "–", v.mac, v.host || "–", human(v.tx_rate_bps, "bit/s"), human(v.rx_rate_bps, "bit/s"),
      v.peak_to_mean === null ? "–" : v.peak_to_mean.toFixed(2)]),
    i => openSeries({ kind: "vm", lan: lan.lan, mac: vms[i].mac, label: vms[i].name || vms[i].ip || vms[i].mac }));
}

// ---- services --------------------------------------------------------------------------

// One row per backend; the section shows only where the LAN has services (a host's own
// view, or on the bulletin's the overlay's: each backend as its own host reports it).
function renderServices(lan) {
  const list = lan && lan.services ? lan.services : [];
  document.getElementById("services-section").hidden = list.length === 0;
  const t = document.getElementById("services");
  const rows = [], keys = [];
  for (const s of list) {
    for (const b of s.backends) {
      rows.push([`${s.service} (${s.address}, ${s.policy}, ${s.backends_up} of ${s.backends.length} up)`, b.backend, b.state, b.location,
        String(b.weight), b.load_mbps.toFixed(1) + " Mbit/s", String(b.open_connections ?? 0), b.rtt_ms.toFixed(2) + " ms", String(b.flows_total), String(b.active_flows),
        (b.share_last_minute * 100).toFixed(0) + " %"]);
      keys.push([s.service, b.backend, b.state]);
    }
  }
  table(t, [{ t: "service" }, { t: "backend" }, { t: "state" }, { t: "where" }, { t: "weight", num: true }, { t: "load", num: true },
    { t: "open", num: true }, { t: "RTT", num: true }, { t: "flows", num: true }, { t: "active", num: true }, { t: "share, last minute", num: true }], rows);
  [...t.querySelectorAll("tr")].slice(1).forEach((tr, i) => {
    tr.dataset.service = keys[i][0];
    tr.dataset.backend = keys[i][1];
    tr.dataset.state = keys[i][2];
    tr.children[2].classList.add("svc-" + keys[i][2]);
  });
}

// ---- alerts ----------------------------------------------------------------------------

function renderAlerts() {
  const t = document.getElementById("alerts");
  const rows = state.ov.alerts;
  if (rows.length === 0) {
    clear(t).appendChild(el("tr", {}, el("td", { class: "empty", text: "No alert firing or pending." })));
    return;
  }
  table(t, [{ t: "state" }, { t: "severity" }, { t: "alert" }, { t: "host" }, { t: "LAN" }, { t: "labels" }, { t: "since", num: true }, { t: "summary" }],
    rows.map(a => [a.state, a.severity, a.alert, a.host, a.lan, a.labels.map(([k, v]) => `${k}=${v}`).join(", "),
      `${a.since_s + Math.max(0, Math.round((state.ov.at_ms - state.alertsAt) / 1000))} s`, a.summary]));
  [...t.querySelectorAll("tr")].slice(1).forEach((tr, i) => tr.children[1].classList.add("sev-" + rows[i].severity));
}

// ---- series ----------------------------------------------------------------------------

function seriesUrl(k) {
  const q = new URLSearchParams({ kind: k.kind, lan: k.lan });
  if (k.kind === "tunnel") { q.set("from", k.from); q.set("to", k.to); } else q.set("mac", k.mac);
  return "/api/v1/series?" + q.toString();
}

function openSeries(k) {
  state.open = k;
  document.getElementById("series-section").hidden = false;
  document.getElementById("series-title").textContent =
    k.kind === "tunnel" ? `Tunnel ${k.from} → ${k.to} (${k.lan})` : `VM ${k.label || k.mac} (${k.lan})`;
  refreshSeries(true);
  document.getElementById("series-section").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

const CHARTS = {
  tunnel: [
    { title: "RTT (ms)", cols: ["rtt_p50_ms", "rtt_p99_ms"], names: ["p50", "p99"], scale: 1 },
    { title: "loss (%)", cols: ["loss_tx_ratio", "loss_rx_ratio"], names: ["towards peer", "from peer"], scale: 100 },
    { title: "rate (Mbit/s)", cols: ["tx_rate_bps", "rx_rate_bps"], names: ["sent", "received"], scale: 1e-6 },
  ],
  vm: [{ title: "rate (Mbit/s)", cols: ["tx_rate_bps", "rx_rate_bps"], names: ["sends", "receives"], scale: 1e-6 }],
};
const COLOURS = ["#1f77b4", "#d62728"];

async function refreshSeries(fresh) {
  const k = state.open;
  if (!k) return;
  const note = document.getElementById("series-note");
  let data = null;
  try {
    const r = await fetch(seriesUrl(k), { cache: "no-store" });
    if (r.ok) data = await r.json();
  } catch (e) { data = null; }
  if (state.open !== k) return;
  const box = document.getElementById("charts");
  const key = JSON.stringify(k);
  if (fresh || state.openKey !== key) {
    for (const c of state.charts) c.destroy();
    state.charts = [];
    clear(box);
    state.openKey = key;
  }
  if (!data || data.t_ms.length === 0) { note.textContent = "No points yet: they arrive with the next reports."; return; }
  const step = state.ov ? state.ov.history.step_ms / 1000 : 1;
  const n = data.t_ms.length;
  note.textContent = `${n} point${n === 1 ? "" : "s"}, about ${step.toFixed(0)} s apart (at most ${state.ov ? state.ov.history.points : "?"} kept).`;
  const col = new Map(data.columns.map(c => [c.name, c.values]));
  const x = data.t_ms.map(t => t / 1000);
  const width = Math.max(320, box.clientWidth - 8);
  CHARTS[k.kind].forEach((spec, i) => {
    const ys = spec.cols.map(c => (col.get(c) || []).map(v => v === null ? null : v * spec.scale));
    if (state.charts[i]) { state.charts[i].setData([x, ...ys]); return; }
    const div = el("div", { class: "chart" });
    box.appendChild(div);
    state.charts[i] = new uPlot({
      title: spec.title, width, height: 180,
      series: [{}, ...spec.names.map((n, j) => ({ label: n, stroke: COLOURS[j], width: 1.5, spanGaps: false }))],
      // A single point would stretch the time axis over years: show a minute around it.
      scales: { x: { time: true, range: u => {
        const t = u.data[0];
        return t.length < 2 ? [t[0] - 30, t[0] + 30] : [t[0], t[t.length - 1]];
      } } },
      axes: [{}, { size: 60 }],
    }, [x, ...ys], div);
  });
}

// ---- wiring ----------------------------------------------------------------------------

function render() {
  if (!state.ov) return;
  renderHeader();
  const lan = lanView();
  renderTopology(lan);
  renderHeat(lan);
  renderTraffic(lan);
  renderServices(lan);
  renderAlerts();
  if (state.open) refreshSeries(false);
  document.body.dataset.renderedAt = String(state.ov.at_ms);
  // Milliseconds from the page's start to its first picture of a LAN (the load bench).
  if (lan && !document.body.dataset.firstRenderMs) {
    document.body.dataset.firstRenderMs = String(Math.round(performance.now()));
    document.body.dataset.firstRenderHosts = String(lan.hosts.length);
  }
}

function connect() {
  const live = document.getElementById("live");
  if (state.es) state.es.close();
  const es = new EventSource("/api/v1/events" + (state.lan ? "?lan=" + encodeURIComponent(state.lan) : ""));
  state.es = es;
  es.addEventListener("open", () => { live.dataset.state = "live"; live.textContent = "live"; });
  es.addEventListener("error", () => {
    live.dataset.state = "reconnecting"; live.textContent = "reconnecting…";
    // The browser retries a dropped stream by itself, but not a refused one (503: too
    // many live views): then this page tries again in a while.
    if (es.readyState === EventSource.CLOSED && state.es === es) setTimeout(connect, 5000);
  });
  const shown = () => {
    live.dataset.state = "live";
    live.textContent = "live · " + new Date(state.ov.at_ms).toLocaleTimeString();
    render();
  };
  es.addEventListener("snapshot", e => {
    state.ov = JSON.parse(e.data);
    state.alertsAt = state.ov.at_ms;
    shown();
  });
  es.addEventListener("delta", e => {
    if (!state.ov) return;
    applyDelta(JSON.parse(e.data));
    shown();
  });
}

// Another LAN: a stream of its own (the server sends only the LAN a page shows).
document.getElementById("lan").addEventListener("change", e => { state.lan = e.target.value; connect(); });
document.getElementById("metric").addEventListener("change", e => { state.metric = e.target.value; render(); });
document.getElementById("series-close").addEventListener("click", () => {
  state.open = null;
  for (const c of state.charts) c.destroy();
  state.charts = []; state.openKey = "";
  document.getElementById("series-section").hidden = true;
});
connect();
