/* Plinth's dashboard: draws the charts of a page (uPlot) from the JSON specs the server
 * serves, and redraws them when htmx swaps part of a page in.
 *
 * A chart is <div class="plot" data-chart="URL" [data-zoom="URL"]>. URL answers
 * {"x_label", "y_label", "x_time", "series": [{"label", "x": [...], "y": [...],
 * "style": "line" | "points" | "bars"}]}. With data-zoom, zooming (drag across the chart)
 * asks data-zoom + "&start=..&end=.." for the points of that range at full detail;
 * a double click returns to the whole series.
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

  // Bars stand on their x values: half a bar more on each side keeps the outer ones whole.
  function xScale(spec) {
    var scale = { time: !!spec.x_time };
    var bars = spec.series.filter(function (s) { return s.style === "bars" && s.x.length; });
    if (bars.length) {
      var x = bars[0].x;
      var half = x.length > 1 ? (x[1] - x[0]) / 2 : 0.5;
      scale.range = function (u, min, max) { return [min - half, max + half]; };
    }
    return scale;
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
      scales: { x: xScale(spec) },
      axes: [{ label: spec.x_label || "" }, { label: spec.y_label || "" }],
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
        }]
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

  function start(root) {
    var charts = (root || document).querySelectorAll("[data-chart]");
    Array.prototype.forEach.call(charts, function (el) {
      if (el.dataset.started) return;
      el.dataset.started = "true";
      fetchSpec(el.dataset.chart)
        .then(function (spec) { draw(el, spec); })
        .catch(function (e) { message(el, e.message); el.dataset.drawn = "true"; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { start(document); });
  document.addEventListener("htmx:load", function (e) { start(e.detail.elt); });
})();
