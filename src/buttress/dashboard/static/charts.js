// Small SVG line charts for the buttress dashboard: no library, no network.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#38bdf8", "#f472b6", "#34d399", "#fbbf24", "#a78bfa", "#fb923c",
                  "#f87171", "#2dd4bf", "#e879f9", "#94a3b8"];

  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  // The smallest of 1, 2, 2.5, 5 x 10^n at or above value: round axis tops.
  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  // Draw series = [{name, color, points: [[t, v], ...]}] (v may be null: a gap) into
  // container, replacing what it held. options: height, format(v), label(t), t0, t1, min.
  function lines(container, series, options) {
    const o = Object.assign({height: 90, format: String, label: String, min: 0}, options || {});
    const width = Math.max(container.clientWidth || 0, 200);
    const pad = {left: 40, right: 8, top: 6, bottom: 15};
    let t0 = o.t0, t1 = o.t1, top = 0;
    for (const s of series) {
      for (const [t, v] of s.points) {
        if (o.t0 === undefined && (t0 === undefined || t < t0)) t0 = t;
        if (o.t1 === undefined && (t1 === undefined || t > t1)) t1 = t;
        if (v !== null && v > top) top = v;
      }
    }
    const root = svg("svg", {viewBox: `0 0 ${width} ${o.height}`, height: o.height,
                             role: "img"});
    if (t0 === undefined) {
      container.replaceChildren(root);
      return;
    }
    if (t1 <= t0) t1 = t0 + 1;
    top = niceMax(Math.max(top, o.min));
    const widest = Math.max(...[0, 0.5, 1].map((share) => o.format(top * share).length));
    pad.left = 8 + 6 * widest; // room for the longest axis label, roughly 6 px a character
    const plotW = width - pad.left - pad.right, plotH = o.height - pad.top - pad.bottom;
    const x = (t) => pad.left + (plotW * (t - t0)) / (t1 - t0);
    const y = (v) => pad.top + plotH - (plotH * v) / top;
    for (const share of [0, 0.5, 1]) {
      const at = y(top * share);
      root.append(svg("line", {x1: pad.left, x2: width - pad.right, y1: at, y2: at,
                               stroke: "#22304d", "stroke-width": 1}));
      const text = svg("text", {x: pad.left - 4, y: at + 3, "text-anchor": "end"});
      text.textContent = o.format(top * share);
      root.append(text);
    }
    for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
      const text = svg("text", {x: x(t), y: o.height - 3, "text-anchor": anchor});
      text.textContent = o.label(t);
      root.append(text);
    }
    series.forEach((s, index) => {
      const color = s.color || COLORS[index % COLORS.length];
      let d = "", pen = "M", alone = null, drawn = 0;
      for (const [t, v] of s.points) {
        if (v === null || v === undefined) { pen = "M"; continue; }
        d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        alone = pen === "M" ? [t, v] : null;
        pen = "L";
        drawn += 1;
      }
      if (drawn === 1 && alone) {
        root.append(svg("circle", {cx: x(alone[0]), cy: y(alone[1]), r: 2.5, fill: color}));
      } else if (d) {
        root.append(svg("path", {d, fill: "none", stroke: color, "stroke-width": 1.7,
                                 "stroke-linejoin": "round"}));
      }
    });
    container.replaceChildren(root);
  }

  // A legend: a swatch, the name and the last value of each series.
  function legend(series, format) {
    const box = document.createElement("div");
    box.className = "legend";
    series.forEach((s, index) => {
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = s.color || COLORS[index % COLORS.length];
      const last = [...s.points].reverse().find((p) => p[1] !== null);
      item.append(swatch, `${s.name} ${last ? format(last[1]) : "—"}`);
      box.append(item);
    });
    return box;
  }

  window.ButtressCharts = {lines, legend, COLORS};
})();
