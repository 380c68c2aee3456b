/* negdb browser: draws every [data-chart] panel with uPlot (vendored) from the JSON spec inside it.
   Kinds: lines (numeric x, CI bands), ci (categorical x, points with CI whiskers), bars (categorical counts),
   hist (histogram vs the fitted Gaussian, negative region shaded, linear/log). Hover shows values and CIs.
   Without JavaScript the plain tables next to the charts are the data. */
(function () {
  "use strict";
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"];

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(3);
    return String(+v.toPrecision(4));
  }

  function color(i, alpha) {
    var c = COLORS[i % COLORS.length];
    if (alpha === undefined) return c;
    var n = parseInt(c.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function xText(spec, v) {
    if (spec.xlabels) return spec.xlabels[Math.round(v)] !== undefined ? spec.xlabels[Math.round(v)] : "";
    return fmt(v);
  }

  /* hover: one line per series with its value and, where there is one, its 95% interval */
  function tooltipPlugin(spec) {
    var tip;
    return {
      hooks: {
        init: function (u) {
          tip = document.createElement("div");
          tip.className = "tip";
          tip.style.display = "none";
          u.over.appendChild(tip);
        },
        setCursor: function (u) {
          var i = u.cursor.idx;
          if (i === null || i === undefined) { tip.style.display = "none"; return; }
          var lines = ["<b>" + (spec.xlabel ? spec.xlabel + " " : "") + escapeHtml(xText(spec, u.data[0][i])) + "</b>"];
          spec.series.forEach(function (s, k) {
            var y = s.y[i];
            var ci = (s.lo && s.hi && s.lo[i] !== null && s.hi[i] !== null) ?
              " [" + fmt(s.lo[i]) + ", " + fmt(s.hi[i]) + "]" : "";
            lines.push('<span style="color:' + color(k) + '">■</span> ' + escapeHtml(s.label) + ": " + fmt(y) + ci);
          });
          tip.innerHTML = lines.join("<br>");
          tip.style.display = "block";
          var left = u.cursor.left, top = u.cursor.top;
          tip.style.left = (left + 12 > u.over.clientWidth - 180 ? left - 190 : left + 12) + "px";
          tip.style.top = Math.max(0, top - 10) + "px";
        }
      }
    };
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }

  /* CI whiskers (ci kind) or bands (lines kind), and the shaded negative region (hist kind) */
  function drawPlugin(spec) {
    return {
      hooks: {
        drawClear: function (u) {
          if (!spec.neg) return;
          var ctx = u.ctx, x0 = u.valToPos(u.scales.x.min, "x", true), xz = u.valToPos(0, "x", true);
          if (xz <= x0) return;
          ctx.save();
          ctx.fillStyle = "rgba(214, 39, 40, 0.08)";
          ctx.fillRect(x0, u.bbox.top, Math.min(xz, u.bbox.left + u.bbox.width) - x0, u.bbox.height);
          ctx.restore();
        },
        draw: function (u) {
          var ctx = u.ctx;
          if (spec.kind === "ci" && u.scales.y.min < 0 && u.scales.y.max > 0) {  // the no-difference line
            var y0 = u.valToPos(0, "y", true);
            ctx.save();
            ctx.strokeStyle = "#98a2b3";
            ctx.setLineDash([4, 4]);
            ctx.beginPath(); ctx.moveTo(u.bbox.left, y0); ctx.lineTo(u.bbox.left + u.bbox.width, y0); ctx.stroke();
            ctx.restore();
          }
          spec.series.forEach(function (s, k) {
            if (!u.series[k + 1].show) return;
            if (spec.kind === "ci") {  // points, shifted per series so their whiskers do not overlap
              ctx.save();
              ctx.fillStyle = color(k);
              var nn = spec.series.length, sh = (k - (nn - 1) / 2) * 0.12;
              for (var q = 0; q < u.data[0].length; q++) {
                if (s.y[q] === null) continue;
                ctx.beginPath();
                ctx.arc(u.valToPos(u.data[0][q] + sh, "x", true), u.valToPos(s.y[q], "y", true), 4, 0, 2 * Math.PI);
                ctx.fill();
              }
              ctx.restore();
            }
            if (!s.lo || !s.hi) return;
            ctx.save();
            if (spec.kind === "lines") {
              ctx.fillStyle = color(k, 0.15);
              ctx.beginPath();
              var started = false, back = [];
              for (var i = 0; i < u.data[0].length; i++) {
                if (s.lo[i] === null || s.hi[i] === null) continue;
                var x = u.valToPos(u.data[0][i], "x", true);
                var y = u.valToPos(s.hi[i], "y", true);
                if (!started) { ctx.moveTo(x, y); started = true; } else { ctx.lineTo(x, y); }
                back.push([x, u.valToPos(s.lo[i], "y", true)]);
              }
              for (var j = back.length - 1; j >= 0; j--) ctx.lineTo(back[j][0], back[j][1]);
              ctx.closePath();
              ctx.fill();
            } else {
              ctx.strokeStyle = color(k);
              ctx.lineWidth = 1.5;
              var n = spec.series.length, shift = (k - (n - 1) / 2) * 0.12;
              for (var m = 0; m < u.data[0].length; m++) {
                if (s.lo[m] === null || s.hi[m] === null) continue;
                var xx = u.valToPos(u.data[0][m] + shift, "x", true);
                var y1 = u.valToPos(s.lo[m], "y", true), y2 = u.valToPos(s.hi[m], "y", true);
                ctx.beginPath();
                ctx.moveTo(xx, y1); ctx.lineTo(xx, y2);
                ctx.moveTo(xx - 4, y1); ctx.lineTo(xx + 4, y1);
                ctx.moveTo(xx - 4, y2); ctx.lineTo(xx + 4, y2);
                ctx.stroke();
              }
            }
            ctx.restore();
          });
        }
      }
    };
  }

  function build(el, spec) {
    var categorical = !!spec.xlabels;
    var n = spec.series.length;
    var ys = spec.series.map(function (s) {
      return s.y.map(function (v) { return (spec.log && v !== null && v <= 0) ? null : v; });
    });
    var data = [spec.x].concat(ys);
    var series = [{label: spec.xlabel || "x", value: function (u, v) { return v === null ? "–" : xText(spec, v); }}];
    spec.series.forEach(function (s, k) {
      var one = {label: s.label, stroke: color(k), width: 2, value: function (u, v) { return fmt(v); }};
      if (spec.kind === "ci") {  // drawn by drawPlugin (points with whiskers)
        one.paths = function () { return null; };
        one.points = {show: false};
      } else if (spec.kind === "bars" || (spec.kind === "hist" && k === 0)) {
        one.paths = uPlot.paths.bars({size: [spec.kind === "hist" ? 1 : 0.7, Infinity], gap: spec.kind === "hist" ? 0 : 2});
        one.fill = color(k, 0.45);
        one.points = {show: false};
      } else {
        one.points = {show: spec.x.length < 40};
      }
      series.push(one);
    });
    var xScale = {time: false};
    if (categorical) { xScale.auto = false; xScale.range = [-0.6, spec.x.length - 0.4]; }
    var yScale = {distr: spec.log ? 3 : 1};
    if (spec.log) {  // from half a count (a histogram) or half the smallest value, so the Gaussian's far tails
      var pos = [];  // do not stretch the axis down to 1e-10 and single counts stay small bars
      ys.forEach(function (a) { a.forEach(function (v) { if (v !== null && isFinite(v) && v > 0) pos.push(v); }); });
      if (pos.length) {
        var top = Math.max.apply(null, pos);
        var bottom = spec.kind === "hist" ? 0.5 : Math.min.apply(null, pos) / 2;
        yScale.auto = false;
        yScale.range = [Math.min(bottom, top / 2), top * 2];
      }
    }
    var withCi = spec.series.some(function (s) { return s.lo && s.hi; });
    if (!spec.log && (withCi || spec.kind === "ci")) {  // the intervals must fit, and a flat line is not 0..100
      var vals = [];
      spec.series.forEach(function (s) {
        [s.y, s.lo || [], s.hi || []].forEach(function (a) {
          a.forEach(function (v) { if (v !== null && isFinite(v)) vals.push(v); });
        });
      });
      if (vals.length) {
        var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
        var pad = hi > lo ? (hi - lo) * 0.08 : (Math.abs(hi) * 0.1 || 0.05);
        if (spec.kind === "ci") { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
        yScale.auto = false;
        yScale.range = [lo - pad, hi + pad];
      }
    }
    var integerX = !categorical && spec.x.length && spec.x.every(function (v) { return Number.isInteger(v); });
    var opts = {
      width: Math.max(320, el.clientWidth || 640),
      height: spec.kind === "hist" ? 280 : 300,
      series: series,
      scales: {x: xScale, y: yScale},
      axes: [
        {label: spec.xlabel || "", values: categorical ? function (u, splits) {
          return splits.map(function (v) { return Number.isInteger(v) ? xText(spec, v) : ""; });
        } : undefined, rotate: categorical && spec.xlabels.length > 8 ? -40 : 0, size: categorical && spec.xlabels.length > 8 ? 90 : 50},
        {label: spec.ylabel || ""}
      ],
      cursor: {drag: {x: true, y: false}},
      plugins: [tooltipPlugin(spec), drawPlugin(spec)]
    };
    if (categorical) opts.axes[0].splits = function () { return spec.x; };
    if (integerX) opts.axes[0].incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5,
                                         5e5, 1e6, 2e6, 5e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12];
    el.innerHTML = "";
    var chart = new uPlot(opts, data, el);
    el.dataset.drawn = "1";
    el.dataset.points = String(spec.x.length * n);
    el.dataset.scale = spec.log ? "log" : "linear";
    return chart;
  }

  function setup(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.dataset.drawn) return;
      var script = el.querySelector('script[type="application/json"]');
      if (!script) return;
      var spec = JSON.parse(script.textContent);
      el._spec = spec;
      el._chart = build(el, spec);
      var table = el.nextElementSibling;
      if (table && table.classList.contains("fallback")) {
        var details = document.createElement("details");
        var summary = document.createElement("summary");
        summary.textContent = "data table";
        table.parentNode.insertBefore(details, table);
        details.appendChild(summary);
        details.appendChild(table);
      }
    });
    (root || document).querySelectorAll(".scale-toggle").forEach(function (btn) {
      if (btn.dataset.bound) return;
      btn.dataset.bound = "1";
      btn.addEventListener("click", function () {
        var el = document.getElementById(btn.dataset.target);
        if (!el || !el._spec) return;
        el._spec.log = !el._spec.log;
        el._chart.destroy();
        el._chart = build(el, el._spec);
        btn.textContent = el._spec.log ? "linear scale" : "log scale";
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { setup(document); });
  document.addEventListener("htmx:load", function (e) { setup(e.detail.elt); });
})();
