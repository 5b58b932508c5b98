// Inline SVG charts for the dashboard: a series over time with an optional interval band and
// horizontal reference lines (a margin, a threshold). No library: plain SVG elements.
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 420, H = 180, L = 52, R = 10, T = 10, B = 26;

  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmt(v) {
    if (!Number.isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
    return Number(v.toPrecision(3)).toString();
  }

  // points: [{t: ms, y, lo?, hi?}] sorted by t; refs: [{y, cls, label}].
  function series(points, refs) {
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    const pts = points.filter((p) => Number.isFinite(p.y));
    const ys = [];
    for (const p of pts) {
      ys.push(p.y);
      if (Number.isFinite(p.lo)) ys.push(p.lo);
      if (Number.isFinite(p.hi)) ys.push(p.hi);
    }
    for (const r of refs) if (Number.isFinite(r.y)) ys.push(r.y);
    if (pts.length === 0) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "no data yet"));
      svg.dataset.points = "0";
      return svg;
    }
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (y0 === y1) { y0 -= 1; y1 += 1; }
    const pad = (y1 - y0) * 0.08;
    y0 -= pad; y1 += pad;
    const t0 = pts[0].t, t1 = Math.max(pts[pts.length - 1].t, t0 + 1);
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
    // Axes.
    svg.appendChild(el("line", { x1: L, y1: T, x2: L, y2: H - B, class: "zero" }));
    svg.appendChild(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "zero" }));
    svg.appendChild(el("text", { x: L - 4, y: T + 8, "text-anchor": "end", class: "axis" }, fmt(y1)));
    svg.appendChild(el("text", { x: L - 4, y: H - B, "text-anchor": "end", class: "axis" }, fmt(y0)));
    const secs = Math.round((t1 - t0) / 1000);
    svg.appendChild(el("text", { x: L, y: H - 8, class: "axis" }, new Date(t0).toLocaleTimeString()));
    svg.appendChild(el("text", { x: W - R, y: H - 8, "text-anchor": "end", class: "axis" }, `+${secs}s`));
    if (y0 < 0 && y1 > 0) svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "zero" }));
    // The interval band.
    const banded = pts.filter((p) => Number.isFinite(p.lo) && Number.isFinite(p.hi));
    if (banded.length > 0) {
      const upper = banded.map((p) => `${x(p.t).toFixed(1)},${y(p.hi).toFixed(1)}`);
      const lower = banded.slice().reverse().map((p) => `${x(p.t).toFixed(1)},${y(p.lo).toFixed(1)}`);
      svg.appendChild(el("polygon", { points: upper.concat(lower).join(" "), class: "band" }));
    }
    for (const r of refs) {
      if (!Number.isFinite(r.y)) continue;
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(r.y), y2: y(r.y), class: r.cls }));
      svg.appendChild(el("text", { x: W - R - 2, y: y(r.y) - 3, "text-anchor": "end", class: "axis" }, `${r.label} ${fmt(r.y)}`));
    }
    svg.appendChild(el("polyline", { points: pts.map((p) => `${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}`).join(" "), class: "line" }));
    for (const p of pts) svg.appendChild(el("circle", { cx: x(p.t).toFixed(1), cy: y(p.y).toFixed(1), r: 2.2, class: "dot" }));
    svg.dataset.points = String(pts.length);
    svg.dataset.last = `${pts[pts.length - 1].t}:${pts[pts.length - 1].y}`;
    return svg;
  }

  return { series, fmt };
})();
