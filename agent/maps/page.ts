/**
 * The /maps page: pie charts of BPF map memory by map name and by owner (like
 * bpfmemapie), plus tables by pod and of the largest maps. Everything is
 * served by the agent: the page embeds the inventory as JSON, a small script
 * (/maps/chart.js, below) draws the charts as inline SVG with DOM calls only
 * (no innerHTML: map names and comms are untrusted text), and refreshes from
 * /api/v1/maps every 30 s. No CDN, no chart library, works offline.
 */

/** The page; `data` is what /api/v1/maps returns. */
export function mapsPage(data: unknown): string {
  // `<` escaped so no map name or comm can close the script element.
  const json = JSON.stringify(data).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>BPF map memory - podmeter</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #1d2330; background: #fff; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .sub { color: #5a6270; margin-bottom: 16px; }
  .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 24px; max-width: 1200px; }
  .chart { display: flex; gap: 12px; align-items: flex-start; min-width: 0; }
  h2 { font-size: 16px; margin: 8px 0; }
  .legend { list-style: none; padding: 0; margin: 36px 0 0; font-size: 13px; flex: 1; min-width: 0; }
  .legend li { display: flex; gap: 6px; align-items: center; margin: 2px 0; white-space: nowrap; }
  .legend .label { overflow: hidden; text-overflow: ellipsis; }
  .swatch { width: 12px; height: 12px; border-radius: 2px; flex: none; }
  .legend .size { color: #5a6270; margin-left: auto; padding-left: 8px; flex: none; }
  table { border-collapse: collapse; margin: 4px 0 16px; font-size: 13px; }
  th, td { padding: 2px 10px; text-align: left; border-bottom: 1px solid #e4e7ec; }
  th.num, td.num { text-align: right; }
  th { color: #5a6270; font-weight: 600; }
</style>
</head>
<body>
<h1>BPF map memory</h1>
<div class="sub" id="summary"></div>
<div class="charts">
  <section class="chart"><div><h2>By map name</h2><svg id="pie-name" width="220" height="220" viewBox="0 0 300 300" role="img" aria-label="BPF map memory by map name"></svg></div><ul class="legend" id="legend-name"></ul></section>
  <section class="chart"><div><h2>By owner</h2><svg id="pie-owner" width="220" height="220" viewBox="0 0 300 300" role="img" aria-label="BPF map memory by owner"></svg></div><ul class="legend" id="legend-owner"></ul></section>
</div>
<h2>By pod</h2>
<table id="table-pod"></table>
<h2>Largest maps</h2>
<table id="table-maps"></table>
<script id="podmeter-maps" type="application/json">${json}</script>
<script src="maps/chart.js"></script>
</body>
</html>
`;
}

/** Drawn on load from the embedded JSON, then every 30 s from api/v1/maps. Plain ES2017, no dependencies. */
export const CHART_JS = String.raw`'use strict';
(function () {
  var SVG = 'http://www.w3.org/2000/svg';
  var COLORS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#17becf', '#bab0ac'];
  var SLICES = 10;
  var UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

  function bytes(n) {
    var v = Number(n), u = 0;
    while (Math.abs(v) >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
    return u === 0 ? v + ' B' : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0) + ' ' + UNITS[u];
  }

  function el(tag, text, attrs) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  /** The largest SLICES entries, the rest as one 'other' slice. */
  function slices(items) {
    var sorted = items.filter(function (i) { return i.bytes > 0; }).sort(function (a, b) { return b.bytes - a.bytes; });
    var top = sorted.slice(0, SLICES);
    var rest = sorted.slice(SLICES);
    if (rest.length > 0) {
      top.push({ label: 'other (' + rest.length + ')', bytes: rest.reduce(function (s, i) { return s + i.bytes; }, 0), count: rest.reduce(function (s, i) { return s + i.count; }, 0) });
    }
    return top;
  }

  function pie(svg, legend, items) {
    clear(svg); clear(legend);
    var cx = 150, cy = 150, r = 140;
    var parts = slices(items);
    var total = parts.reduce(function (s, p) { return s + p.bytes; }, 0);
    if (total <= 0) {
      svg.appendChild(svgEl('circle', { cx: cx, cy: cy, r: r, fill: '#e4e7ec' }));
      var t = svgEl('text', { x: cx, y: cy, 'text-anchor': 'middle', fill: '#5a6270' });
      t.textContent = 'no BPF maps';
      svg.appendChild(t);
      return 0;
    }
    var angle = -Math.PI / 2;
    parts.forEach(function (p, i) {
      var color = COLORS[i % COLORS.length];
      var frac = p.bytes / total;
      var shape;
      if (frac >= 0.9999) {
        shape = svgEl('circle', { cx: cx, cy: cy, r: r, fill: color });
      } else {
        var end = angle + frac * 2 * Math.PI;
        var x0 = cx + r * Math.cos(angle), y0 = cy + r * Math.sin(angle);
        var x1 = cx + r * Math.cos(end), y1 = cy + r * Math.sin(end);
        var large = frac > 0.5 ? 1 : 0;
        shape = svgEl('path', {
          d: 'M' + cx + ',' + cy + ' L' + x0.toFixed(2) + ',' + y0.toFixed(2) + ' A' + r + ',' + r + ' 0 ' + large + ' 1 ' + x1.toFixed(2) + ',' + y1.toFixed(2) + ' Z',
          fill: color, stroke: '#fff', 'stroke-width': 1
        });
        angle = end;
      }
      var title = svgEl('title', {});
      title.textContent = p.label + ': ' + bytes(p.bytes) + ' (' + (frac * 100).toFixed(1) + '%, ' + p.count + ' maps)';
      shape.appendChild(title);
      shape.setAttribute('class', 'slice');
      svg.appendChild(shape);

      var li = el('li');
      li.appendChild(el('span', undefined, { class: 'swatch', style: 'background:' + color }));
      li.appendChild(el('span', p.label === '' ? '(no name)' : p.label, { class: 'label', title: p.label }));
      li.appendChild(el('span', bytes(p.bytes) + ' (' + (frac * 100).toFixed(1) + '%)', { class: 'size' }));
      legend.appendChild(li);
    });
    return parts.length;
  }

  /** Columns named in NUMERIC are right-aligned. */
  var NUMERIC = { id: true, maps: true, memory: true };

  function table(node, header, rows) {
    clear(node);
    var tr = el('tr');
    header.forEach(function (h) { tr.appendChild(el('th', h, NUMERIC[h] ? { class: 'num' } : undefined)); });
    node.appendChild(tr);
    rows.forEach(function (row) {
      var r = el('tr');
      row.forEach(function (c, i) { r.appendChild(el('td', String(c), NUMERIC[header[i]] ? { class: 'num' } : undefined)); });
      node.appendChild(r);
    });
    if (rows.length === 0) {
      var none = el('tr');
      none.appendChild(el('td', 'none', { colspan: String(header.length) }));
      node.appendChild(none);
    }
  }

  function draw(data) {
    document.getElementById('summary').textContent =
      bytes(data.totalBytes) + ' in ' + data.mapCount + ' maps' +
      ' - kernel ' + data.kernel + (data.memlockExact ? ' (memlock exact)' : ' (memlock is from the map\'s shape before 6.4, not exact)') +
      ' - ' + new Date(data.takenAt).toLocaleString();
    var n = pie(document.getElementById('pie-name'), document.getElementById('legend-name'),
      data.byName.map(function (g) { return { label: g.name, bytes: g.bytes, count: g.maps }; }));
    var o = pie(document.getElementById('pie-owner'), document.getElementById('legend-owner'),
      data.byOwner.map(function (g) { return { label: g.owner, bytes: g.bytes, count: g.maps }; }));
    table(document.getElementById('table-pod'), ['pod', 'uid', 'maps', 'memory'],
      data.byPod.map(function (p) { return [p.pod ? p.namespace + '/' + p.pod : '-', p.uid, p.maps, bytes(p.bytes)]; }));
    table(document.getElementById('table-maps'), ['name', 'id', 'type', 'owner', 'memory'],
      data.maps.slice(0, 50).map(function (m) { return [m.name, m.id, m.type, m.owners.join(', '), bytes(m.bytes) + (m.estimated ? ' (est.)' : '')]; }));
    document.documentElement.setAttribute('data-drawn', String(n + o));
  }

  draw(JSON.parse(document.getElementById('podmeter-maps').textContent));
  setInterval(function () {
    fetch('api/v1/maps').then(function (r) { return r.ok ? r.json() : null; }).then(function (d) { if (d) draw(d); }).catch(function () {});
  }, 30000);
})();
`;
