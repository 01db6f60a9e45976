/* Plinth's dashboard: draws the charts of a page (uPlot) from the JSON specs the server
 * serves, and redraws them when htmx swaps part of a page in.
 *
 * A chart is <div class="plot" data-chart="URL" [data-zoom="URL"]>. URL answers
 * {"x_label", "y_label", "x_time", "series": [{"label", "x": [...], "y": [...],
 * "style": "line" | "points" | "bars"}]}. With data-zoom, zooming (drag across the chart)
 * asks data-zoom + "&start=..&end=.." for the points of that range at full detail;
 * a double click returns to the whole series.
 *
 * A series may carry "lower" and "upper" (an interval per y): error bars on "points", a
 * shaded band along a "line". A spec may name its x values ("x_names": [[x, name], ...],
 * e.g. arms) and ask for a dashed "no effect" line at y = 0 ("zero": true).
 * <div class="plot" data-spec="ID"> draws the spec in <script type="application/json"
 * id="ID"> instead of fetching one (a page saved as one file). A form with data-confirm
 * asks before it is sent.
 */
(function () {
  "use strict";
  var palette = ["#1f5fbf", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#be185d"];

  function aligned(spec) {
    if (spec.series.length === 1) return [spec.series[0].x, spec.series[0].y];
    return uPlot.join(spec.series.map(function (s) { return [s.x, s.y]; }));
  }

  function seriesOptions(s, i) {
    var colour = s.colour || palette[i % palette.length];
    var base = { label: s.label, stroke: colour, spanGaps: true };
    if (s.style === "points") {
      base.paths = function () { return null; };
      base.points = { show: true, size: 7, fill: colour, stroke: colour };
    } else if (s.style === "bars") {
      base.fill = colour + "99";
      base.paths = uPlot.paths.bars({ size: [0.95, 200] });
      base.points = { show: false };
    } else {
      base.width = 1.5;
      base.points = { show: false };
    }
    return base;
  }

  // Bars stand on their x values: half a bar more on each side keeps the outer ones whole;
  // so do named x values (categories) with their error bars.
  function xScale(spec) {
    var scale = { time: !!spec.x_time };
    var bars = spec.series.filter(function (s) {
      return (s.style === "bars" || spec.x_names) && s.x.length;
    });
    if (bars.length) {
      var x = bars[0].x;
      var half = x.length > 1 ? (x[1] - x[0]) / 2 : 0.5;
      scale.range = function (u, min, max) { return [min - half, max + half]; };
    }
    return scale;
  }

  function hasIntervals(spec) {
    return spec.series.some(function (s) { return s.lower && s.upper; });
  }

  // uPlot ranges y over the series' values only: the intervals and the zero line count too.
  function yScale(spec) {
    if (!hasIntervals(spec) && !spec.zero) return {};
    var lo = spec.zero ? 0 : Infinity, hi = spec.zero ? 0 : -Infinity;
    spec.series.forEach(function (s) {
      [s.y, s.lower || [], s.upper || []].forEach(function (values) {
        values.forEach(function (v) {
          if (v !== null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        });
      });
    });
    return {
      range: function (u, min, max) {
        return uPlot.rangeNum(Math.min(min, lo), Math.max(max, hi), 0.1, true);
      }
    };
  }

  function xAxis(spec) {
    var axis = { label: spec.x_label || "" };
    if (!spec.x_names) return axis;
    var names = {};
    spec.x_names.forEach(function (pair) { names[pair[0]] = pair[1]; });
    axis.splits = function () { return spec.x_names.map(function (pair) { return pair[0]; }); };
    axis.values = function (u, splits) {
      return splits.map(function (x) { return names[x] === undefined ? "" : names[x]; });
    };
    return axis;
  }

  // Error bars (points) or a band (line) per series with an interval; the zero line.
  function drawIntervals(spec) {
    return function (u) {
      var ctx = u.ctx;
      ctx.save();
      ctx.beginPath();
      ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
      ctx.clip();
      if (spec.zero) {
        var y0 = u.valToPos(0, "y", true);
        ctx.strokeStyle = "#5a6472";
        ctx.lineWidth = 1;
        ctx.setLineDash([6, 4]);
        ctx.beginPath();
        ctx.moveTo(u.bbox.left, y0);
        ctx.lineTo(u.bbox.left + u.bbox.width, y0);
        ctx.stroke();
        ctx.setLineDash([]);
      }
      spec.series.forEach(function (s, i) {
        if (!s.lower || !s.upper || !u.series[i + 1].show) return;
        var colour = s.colour || palette[i % palette.length];
        var px = function (v) { return u.valToPos(v, "x", true); };
        var py = function (v) { return u.valToPos(v, "y", true); };
        var ok = function (k) { return s.lower[k] !== null && s.upper[k] !== null; };
        if (s.style === "points") {
          var cap = 6 * devicePixelRatio;
          ctx.strokeStyle = colour;
          ctx.lineWidth = 2 * devicePixelRatio;
          s.x.forEach(function (x, k) {
            if (!ok(k)) return;
            var cx = px(x), lo = py(s.lower[k]), hi = py(s.upper[k]);
            ctx.beginPath();
            ctx.moveTo(cx, lo); ctx.lineTo(cx, hi);
            ctx.moveTo(cx - cap, lo); ctx.lineTo(cx + cap, lo);
            ctx.moveTo(cx - cap, hi); ctx.lineTo(cx + cap, hi);
            ctx.stroke();
          });
        } else {
          var kept = s.x.map(function (x, k) { return k; }).filter(ok);
          if (kept.length < 2) return;
          ctx.fillStyle = colour + "33";
          ctx.beginPath();
          kept.forEach(function (k, j) {
            var f = j ? "lineTo" : "moveTo";
            ctx[f](px(s.x[k]), py(s.upper[k]));
          });
          kept.slice().reverse().forEach(function (k) { ctx.lineTo(px(s.x[k]), py(s.lower[k])); });
          ctx.closePath();
          ctx.fill();
        }
      });
      ctx.restore();
    };
  }

  function message(el, text) {
    el.textContent = "";
    var p = document.createElement("p");
    p.setAttribute("role", "alert");
    p.className = "alert";
    p.textContent = text;
    el.appendChild(p);
  }

  function fetchSpec(url) {
    return fetch(url, { headers: { accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw new Error(body.message || ("the chart's data could not be loaded (" + r.status + ")"));
          return body;
        });
      });
  }

  function draw(el, spec) {
    if (!spec.series.length || !spec.series.some(function (s) { return s.x.length; })) {
      message(el, spec.empty || "No data to draw.");
      el.dataset.drawn = "true";
      return;
    }
    var full = aligned(spec);
    var zoomUrl = el.dataset.zoom;
    var waiting = null;
    var opts = {
      width: Math.max(el.clientWidth, 280),
      height: el.clientWidth < 500 ? 200 : 260,
      series: [{ label: spec.x_label || "x" }].concat(spec.series.map(seriesOptions)),
      scales: { x: xScale(spec), y: yScale(spec) },
      legend: { show: !spec.x_names },  // named x values: the axis names the series
      axes: [xAxis(spec), { label: spec.y_label || "" }],
      cursor: {
        drag: { x: true, y: false },
        bind: {
          dblclick: function (u) {
            return function () { u.setData(full, true); return null; };
          }
        }
      },
      hooks: {
        setSelect: [function (u) {
          if (!zoomUrl || u.select.width < 2) return;
          var start = u.posToVal(u.select.left, "x");
          var end = u.posToVal(u.select.left + u.select.width, "x");
          clearTimeout(waiting);
          waiting = setTimeout(function () {
            fetchSpec(zoomUrl + "&start=" + encodeURIComponent(start) + "&end=" + encodeURIComponent(end))
              .then(function (detail) { u.setData(aligned(detail), false); u.setScale("x", { min: start, max: end }); })
              .catch(function (e) { el.setAttribute("data-error", e.message); });
          }, 50);
        }],
        draw: hasIntervals(spec) || spec.zero ? [drawIntervals(spec)] : []
      }
    };
    el.textContent = "";
    var plot = new uPlot(opts, full, el);
    el.dataset.drawn = "true";
    if (window.ResizeObserver) {
      var width = el.clientWidth;
      new ResizeObserver(function () {
        if (Math.abs(el.clientWidth - width) > 4) {
          width = el.clientWidth;
          plot.setSize({ width: Math.max(width, 280), height: width < 500 ? 200 : 260 });
        }
      }).observe(el);
    }
  }

  function embedded(el) {
    var source = document.getElementById(el.dataset.spec);
    return Promise.resolve().then(function () { return JSON.parse(source.textContent); });
  }

  function start(root) {
    var charts = (root || document).querySelectorAll("[data-chart], [data-spec]");
    Array.prototype.forEach.call(charts, function (el) {
      if (el.dataset.started) return;
      el.dataset.started = "true";
      (el.dataset.spec ? embedded(el) : fetchSpec(el.dataset.chart))
        .then(function (spec) { draw(el, spec); })
        .catch(function (e) { message(el, e.message); el.dataset.drawn = "true"; });
    });
  }

  document.addEventListener("submit", function (e) {
    var question = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) e.preventDefault();
  });
  document.addEventListener("DOMContentLoaded", function () { start(document); });
  document.addEventListener("htmx:load", function (e) { start(e.detail.elt); });
})();
