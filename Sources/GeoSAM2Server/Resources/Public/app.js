// GeoSAM2 web UI: a Leaflet map of the raster in its own CRS, Geo-SAM's click interaction, and
// the JSON API of `geosam2 serve`. Plain JavaScript, no build step.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const MODES = ['fg', 'bg', 'box'];
  const PREVIEW_INTERVAL_MS = 80;

  // Everything the page knows; exposed as `window.geosam2` for tests and the curious.
  const state = {
    store: null,
    mode: 'fg',
    preview: false,
    points: [],          // {x, y, label}
    box: null,           // [minx, miny, maxx, maxy]
    history: [],         // prompt actions, for Z
    hover: null,         // {x, y} under the mouse in preview mode
    mask: null,          // last FeatureCollection shown
    objects: 0,
    latencyMs: null,
    requests: 0,
    ready: false,
    encoding: null,      // last /api/encoding report
    generate: null,      // last /api/generate job report
    generated: null,     // its objects (FeatureCollection) once done, until saved or discarded
  };
  window.geosam2 = { state };

  function fatal(html) {
    const map = $('map');
    map.innerHTML = '<div class="fatal"><div>' + html + '</div></div>';
  }

  function message(text, kind) {
    const box = $('message');
    if (!text) { box.hidden = true; return; }
    box.textContent = text;
    box.className = kind === 'info' ? 'info' : '';
    box.hidden = false;
    clearTimeout(message.timer);
    message.timer = setTimeout(() => { box.hidden = true; }, kind === 'info' ? 2500 : 6000);
  }

  if (typeof L === 'undefined') {
    fatal('Leaflet, the map library, is not installed on the server.<br>' +
      'Install the Debian package <code>libjs-leaflet</code> (run <code>scripts/setup</code>), then reload this page.');
    return;
  }

  async function api(path, options) {
    const response = await fetch(path, options);
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const error = new Error((body && body.error) || (response.status + ' ' + response.statusText));
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // MARK: Map in the raster's own CRS

  // Leaflet's LatLng carries map coordinates of the store's CRS: lat = y (northing), lng = x
  // (easting). The projection is the raster's geotransform, so tiles line up with its pixels
  // whatever the CRS (projected, geographic, or plain pixels).
  function rasterCRS(map) {
    const gt = map.geotransform, inv = map.inverse;
    const scale = 1 / Math.pow(2, map.native_zoom);
    const projection = {
      project(latlng) {
        const x = latlng.lng, y = latlng.lat;
        return L.point(inv[0] + x * inv[1] + y * inv[2], inv[3] + x * inv[4] + y * inv[5]);
      },
      unproject(point) {
        return L.latLng(gt[3] + point.x * gt[4] + point.y * gt[5], gt[0] + point.x * gt[1] + point.y * gt[2]);
      },
      bounds: L.bounds([0, 0], [map.width, map.height]),
    };
    return L.extend({}, L.CRS.Simple, { projection, transformation: new L.Transformation(scale, 0, scale, 0) });
  }

  let map, crs, maskLayer, objectsLayer, gridLayer, promptLayer, boxPreview, generatedLayer;

  async function start() {
    let store;
    try {
      store = await api('/api/store');
    } catch (error) {
      fatal('Cannot reach the GeoSAM2 server: ' + error.message);
      return;
    }
    state.store = store;
    $('raster-name').textContent = store.raster.name + ' · ' + store.raster.width + '×' + store.raster.height;
    $('raster-crs').textContent = (store.crs_name || 'no CRS (pixel coordinates)') +
      (store.epsg ? ' · EPSG:' + store.epsg : '') + ' · ' + store.tiles + ' tiles' +
      (store.levels > 1 ? ' · ' + store.levels + ' levels' : '');
    $('units').textContent = store.units || 'map units';
    $('output-name').textContent = store.output;

    crs = rasterCRS(store.map);
    map = L.map('map', {
      crs, minZoom: -3, maxZoom: store.map.max_zoom, zoomSnap: 0.25, zoomDelta: 0.5, wheelPxPerZoomLevel: 90,
      boxZoom: false, doubleClickZoom: false, attributionControl: false, preferCanvas: true,
    });
    const w = store.map.width, h = store.map.height;
    const corners = [[0, 0], [w, 0], [w, h], [0, h]].map((p) => crs.projection.unproject(L.point(p[0], p[1])));
    const bounds = L.latLngBounds(corners);
    if (store.map.error) {
      message('The map cannot show the raster: ' + store.map.error);
    } else {
      L.tileLayer('/tiles/{z}/{x}/{y}.png', {
        tileSize: store.map.tile_size, minZoom: -3, maxZoom: store.map.max_zoom,
        minNativeZoom: 0, maxNativeZoom: store.map.native_zoom, bounds, noWrap: true, keepBuffer: 1,
      }).addTo(map);
    }
    map.fitBounds(bounds);

    // Own panes (each with its own canvas) keep the stacking order whatever is redrawn last:
    // grid and saved objects, then the mask, then the prompts on top.
    for (const [name, z] of [['objects', 410], ['mask', 420], ['prompts', 640]]) map.createPane(name).style.zIndex = z;
    // The level-0 grid; coarser pyramid levels would cover it with larger, overlapping tiles.
    gridLayer = L.geoJSON(null, {
      interactive: false, pane: 'objects', filter: (f) => !f.properties.level,
      style: tileStyle,
    });
    objectsLayer = L.geoJSON(null, {
      interactive: false, pane: 'objects', style: { color: '#ffb020', weight: 2, fillColor: '#ffb020', fillOpacity: 0.25 },
    }).addTo(map);
    generatedLayer = L.geoJSON(null, {
      interactive: false, pane: 'objects', style: { color: '#c77dff', weight: 1.5, fillColor: '#c77dff', fillOpacity: 0.2 },
    }).addTo(map);
    maskLayer = L.geoJSON(null, {
      interactive: false, pane: 'mask', style: { color: '#3fd0ff', weight: 2, fillColor: '#3fd0ff', fillOpacity: 0.35 },
    }).addTo(map);
    promptLayer = L.layerGroup().addTo(map);
    window.geosam2.map = map;
    window.geosam2.layers = { grid: gridLayer, objects: objectsLayer, mask: maskLayer, prompts: promptLayer, generated: generatedLayer };

    wireMap();
    wirePanel();
    setMode('fg');
    await Promise.all([loadObjects(), loadGrid(), pollEncoding()]);
    state.ready = true;
    updateStatus();
  }

  // MARK: Encoding on demand

  // Done tiles white; pending orange; the tile being encoded cyan; tiles prompts wait for yellow;
  // failed red.
  function tileStyle(f) {
    const p = f.properties;
    const color = p.activity === 'encoding' ? '#3fd0ff' : p.activity === 'queued' ? '#ffd23f' : p.activity === 'failed' ? '#ff4d4d'
      : p.state === 'done' || p.state === 'empty' ? '#ffffff' : '#ff9d3b';
    return { color, weight: p.activity ? 2 : 1, dashArray: p.activity ? null : '6 4', fill: false };
  }

  // While the server encodes the store, poll its report: the status line shows the progress and
  // the tile in work; the grid (when shown) follows. The view is sent so its tiles come first.
  async function pollEncoding() {
    let report;
    try {
      report = await api('/api/encoding');
    } catch (error) {
      setTimeout(pollEncoding, 5000);  // the server may be busy or restarting: try again later
      return;
    }
    const first = state.encoding === null;
    state.encoding = report;
    updateStatus();
    if (first) sendView();
    if (map && map.hasLayer(gridLayer)) loadGrid();
    // Polling stops once nothing is left but failed tiles (a prompt on one retries it).
    if (report.on_demand && !report.complete && !report.idle) setTimeout(pollEncoding, 1000);
  }

  function sendView() {
    if (!state.encoding || !state.encoding.on_demand || state.encoding.complete) return;
    const b = map.getBounds();
    const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];
    api('/api/view', { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ bbox }) }).catch(() => {});
  }

  function encodingText(r) {
    if (!r || !r.on_demand) return r && !r.complete ? 'Encoded: ' + r.finished + '/' + r.tiles + ' tiles' : '';
    if (r.complete) return 'Encoded: all ' + r.tiles + ' tiles';
    let text = 'Encoding: ' + r.finished + '/' + r.tiles + ' tiles';
    const c = r.current;
    if (c) {
      text += ' · ' + c.tile + (c.reason === 'prompt' ? ' for your prompt' : '') +
        (c.progress !== null ? ' ' + Math.round(c.progress * 100) + '%' : '');
    }
    if (r.queued.length > 1) text += ' · ' + (r.queued.length - 1) + ' more for prompts';
    const failed = Object.keys(r.failed).length;
    if (failed) text += ' · ' + failed + ' failed';
    return text;
  }

  // Fetched first and swapped in at once (no flicker); one load at a time.
  async function loadGrid() {
    if (loadGrid.running) { loadGrid.again = true; return; }
    loadGrid.running = true;
    try {
      const tiles = await api('/api/tiles');
      gridLayer.clearLayers();
      gridLayer.addData(tiles);
    } catch (error) {
      message('Cannot load the tile grid: ' + error.message);
    } finally {
      loadGrid.running = false;
      if (loadGrid.again) { loadGrid.again = false; loadGrid(); }
    }
  }

  async function loadObjects() {
    try {
      const collection = await api('/api/objects');
      objectsLayer.clearLayers();
      objectsLayer.addData(collection);
      state.objects = collection.objects;
    } catch (error) {
      message('Cannot load the saved objects: ' + error.message);
    }
    updateStatus();
  }

  // MARK: Prompts

  function promptBody(withHover) {
    const points = state.points.map((p) => [p.x, p.y, p.label]);
    if (withHover && state.hover && state.mode !== 'box') {
      points.push([state.hover.x, state.hover.y, state.mode === 'bg' ? 0 : 1]);
    }
    const body = addPolygonOptions({ points, box: state.box });
    if ($('largest-only').checked) body.largest_only = true;
    if ($('multimask').checked) {
      body.multimask = true;
      if (state.candidate !== undefined && state.candidate !== null) body.candidate = state.candidate;
    }
    return body;
  }

  // The panel's polygon options every request shares (min area, simplify, fill holes, regularize).
  function addPolygonOptions(body) {
    const minArea = parseFloat($('min-area').value);
    const simplify = parseFloat($('simplify').value);
    if (minArea > 0) body.min_area = minArea;
    if (simplify > 0) body.simplify = simplify;
    if ($('fill-holes').checked) body.fill_holes = true;
    if ($('regularize').checked) body.regularize = true;
    return body;
  }

  function hasPrompt(body) { return body.points.length > 0 || body.box; }

  function addPoint(latlng, label) {
    state.points.push({ x: latlng.lng, y: latlng.lat, label });
    state.history.push({ kind: 'point' });
    promptsChanged();
  }

  function setBox(a, b) {
    const box = [Math.min(a.lng, b.lng), Math.min(a.lat, b.lat), Math.max(a.lng, b.lng), Math.max(a.lat, b.lat)];
    state.history.push({ kind: 'box', previous: state.box });
    state.box = box;
    promptsChanged();
  }

  function undoPrompt() {
    const last = state.history.pop();
    if (!last) return;
    if (last.kind === 'point') state.points.pop(); else state.box = last.previous;
    promptsChanged();
  }

  function clearPrompts() {
    state.points = [];
    state.box = null;
    state.history = [];
    state.candidate = null;
    promptsChanged();
  }

  function drawPrompts() {
    promptLayer.clearLayers();
    if (state.box) {
      const b = state.box;
      L.rectangle([[b[1], b[0]], [b[3], b[2]]], { interactive: false, pane: 'prompts', color: '#ffd23f', weight: 2, fill: false }).addTo(promptLayer);
    }
    for (const p of state.points) {
      L.circleMarker([p.y, p.x], {
        interactive: false, pane: 'prompts', radius: 6, weight: 2, color: '#ffffff',
        fillColor: p.label === 1 ? '#27d17f' : '#ff5a5a', fillOpacity: 1,
      }).addTo(promptLayer);
    }
  }

  function promptsChanged() {
    drawPrompts();
    updateStatus();
    const body = promptBody(state.preview);
    if (hasPrompt(body)) {
      segmenter.now(body);
    } else {
      segmenter.cancel();
      showMask(null);
    }
  }

  // MARK: Segmentation requests: throttled, latest wins

  // Mouse moves queue a request and send it when the one in flight is done (at most one every
  // PREVIEW_INTERVAL_MS); a changed prompt aborts the request in flight. Answers to older
  // requests never replace newer ones.
  const segmenter = {
    controller: null, pending: null, timer: null, lastSent: 0, sequence: 0, shown: 0,

    now(body) {
      if (this.controller) this.controller.abort();
      this.pending = null;
      clearTimeout(this.timer);
      this.timer = null;
      this.send(body);
    },

    later(body) {
      this.pending = body;
      if (this.controller || this.timer) return;
      const wait = Math.max(0, this.lastSent + PREVIEW_INTERVAL_MS - performance.now());
      this.timer = setTimeout(() => { this.timer = null; this.flush(); }, wait);
    },

    flush() {
      if (!this.pending || this.controller) return;
      const body = this.pending;
      this.pending = null;
      this.send(body);
    },

    cancel() {
      if (this.controller) this.controller.abort();
      this.pending = null;
      clearTimeout(this.timer);
      this.timer = null;
    },

    async send(body) {
      const controller = new AbortController();
      const sequence = ++this.sequence;
      this.controller = controller;
      this.lastSent = performance.now();
      state.requests += 1;
      const started = performance.now();
      try {
        const result = await api('/api/segment', {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal: controller.signal,
        });
        if (sequence < this.shown) return;
        this.shown = sequence;
        state.latencyMs = performance.now() - started;
        state.serverMs = result.server_ms;
        showMask(result);
        // A prompt may have retried a failed tile: follow the encoder again.
        if (state.encoding && state.encoding.idle) pollEncoding();
      } catch (error) {
        if (error.name === 'AbortError') return;
        if (sequence < this.shown) return;
        this.shown = sequence;
        showMask(null);
        message(error.message);
      } finally {
        if (this.controller === controller) this.controller = null;
        if (this.pending) this.later(this.pending);
      }
    },
  };

  function showMask(collection) {
    state.mask = collection;
    maskLayer.clearLayers();
    if (collection) maskLayer.addData(collection);
    showCandidates(collection);
    updateStatus();
  }

  function showCandidates(collection) {
    const box = $('candidates');
    if (!$('multimask').checked || !collection || !collection.candidate_scores) { box.hidden = true; return; }
    box.hidden = false;
    box.innerHTML = '';
    collection.candidate_scores.forEach((score, i) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = (i + 1) + ': ' + score.toFixed(2);
      button.title = 'Use mask ' + (i + 1) + ' (predicted IoU ' + score.toFixed(3) + ')';
      if (i === collection.candidate) button.classList.add('active');
      button.addEventListener('click', () => { state.candidate = i; promptsChanged(); });
      box.appendChild(button);
    });
  }

  // MARK: Objects

  async function save() {
    const body = promptBody(false);
    if (!hasPrompt(body)) { message('Nothing to save: click on the object first.'); return; }
    // The class label goes with the object (the `class` attribute); recent labels are offered again.
    const label = $('class-label').value.trim();
    if (label) {
      body.class = label;
      const list = $('class-labels');
      if (![...list.options].some((o) => o.value === label)) list.appendChild(new Option(label, label));
    }
    try {
      const saved = await api('/api/objects', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
      });
      objectsLayer.addData(saved);
      state.objects += 1;
      state.lastSaved = saved.object_id;
      message('Saved object ' + saved.object_id + (label ? ' “' + label + '”' : '') + ' (' + saved.features.length + ' polygon' + (saved.features.length === 1 ? '' : 's') + ')', 'info');
      clearPrompts();
    } catch (error) {
      message('Not saved: ' + error.message);
    }
  }

  async function undoSave() {
    try {
      const deleted = await api('/api/objects/last', { method: 'DELETE' });
      message('Removed object ' + deleted.deleted, 'info');
    } catch (error) {
      message(error.status === 404 ? 'No saved object to undo.' : 'Cannot undo: ' + error.message);
    }
    await loadObjects();
  }

  // MARK: Segment everything in view

  // The view's box goes to POST /api/generate; the job is polled, and its objects are shown as a
  // layer of their own until the user saves them all (they become saved objects) or discards them.
  async function generateInView() {
    if (state.generate && state.generate.status === 'running') return;
    const b = map.getBounds();
    const body = { bbox: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()] };
    // The official generator's defaults unless changed here.
    const pointsPerSide = parseInt($('generate-points').value, 10);
    const iou = parseFloat($('generate-iou').value), stability = parseFloat($('generate-stability').value);
    if (pointsPerSide > 0) body.points_per_side = pointsPerSide;
    if (iou >= 0) body.pred_iou_thresh = iou;
    if (stability >= 0) body.stability_score_thresh = stability;
    addPolygonOptions(body);
    try {
      state.generate = await api('/api/generate', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
      });
    } catch (error) {
      message('Segment everything: ' + error.message);
      return;
    }
    discardGenerated();
    updateGenerate();
    pollGenerate(state.generate.id);
  }

  async function pollGenerate(id) {
    let job;
    try {
      job = await api('/api/generate/' + id);
    } catch (error) {
      message('Segment everything: ' + error.message);
      return;
    }
    state.generate = job;
    updateGenerate();
    if (job.status === 'running') { setTimeout(() => pollGenerate(id), 1000); return; }
    if (job.status === 'failed') { message('Segment everything failed: ' + job.error); return; }
    if (job.status !== 'done') return;
    try {
      state.generated = await api(job.objects_url);
      generatedLayer.clearLayers();
      generatedLayer.addData(state.generated);
    } catch (error) {
      message('Cannot load the objects found: ' + error.message);
    }
    updateGenerate();
  }

  async function saveGenerated() {
    const job = state.generate;
    if (!job || !state.generated) return;
    try {
      const result = await api('/api/generate/' + job.id + '/save', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
      });
      message('Saved ' + result.saved.length + ' object' + (result.saved.length === 1 ? '' : 's'), 'info');
      discardGenerated();
      await loadObjects();
    } catch (error) {
      message('Not saved: ' + error.message);
    }
  }

  function discardGenerated() {
    state.generated = null;
    generatedLayer.clearLayers();
    updateGenerate();
  }

  async function cancelGenerate() {
    const job = state.generate;
    if (job && job.status === 'running') await api('/api/generate/' + job.id, { method: 'DELETE' }).catch(() => {});
  }

  function updateGenerate() {
    const job = state.generate;
    const running = !!job && job.status === 'running';
    $('generate').disabled = running;
    $('generate-cancel').hidden = !running;
    $('generate-save').disabled = !state.generated || !state.generated.features.length;
    $('generate-discard').disabled = !state.generated;
    let text = 'SAM2\u2019s automatic masks on the tiles in view, merged across tiles.';
    if (running) {
      text = 'Segmenting: ' + job.done + '/' + job.total + ' tiles' + (job.eta_s !== undefined ? ' · ETA ' + Math.round(job.eta_s) + ' s' : '');
    } else if (job && job.status === 'done') {
      text = state.generated ? 'Found ' + job.objects + ' object' + (job.objects === 1 ? '' : 's') + ' in ' + job.total + ' tile' +
        (job.total === 1 ? '' : 's') + ' (' + job.elapsed_s + ' s)' : text;
    } else if (job && job.status === 'cancelled') {
      text = 'Cancelled.';
    }
    $('generate-status').textContent = text;
  }

  // MARK: Mouse

  function wireMap() {
    const container = map.getContainer();
    let viewTimer = null;
    map.on('moveend', () => { clearTimeout(viewTimer); viewTimer = setTimeout(sendView, 300); });
    let drag = null;
    let suppressClick = false;

    map.on('click', (e) => {
      if (suppressClick) { suppressClick = false; return; }
      if (state.mode === 'box') return;
      addPoint(e.latlng, state.mode === 'bg' ? 0 : 1);
    });
    map.on('contextmenu', (e) => {
      if (e.originalEvent) e.originalEvent.preventDefault();
      addPoint(e.latlng, 0);
    });
    container.addEventListener('contextmenu', (e) => e.preventDefault());

    // A box: Shift+drag, or a plain drag in box mode. Captured before Leaflet starts panning.
    container.addEventListener('mousedown', (e) => {
      if (e.button !== 0 || !(e.shiftKey || state.mode === 'box')) return;
      map.dragging.disable();
      drag = { start: map.mouseEventToLatLng(e), x: e.clientX, y: e.clientY, moved: false };
      e.preventDefault();
      e.stopPropagation();
    }, true);
    document.addEventListener('mousemove', (e) => {
      if (!drag) return;
      if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 4) drag.moved = true;
      const here = map.mouseEventToLatLng(e);
      if (boxPreview) boxPreview.setBounds(L.latLngBounds(drag.start, here));
      else boxPreview = L.rectangle(L.latLngBounds(drag.start, here), { interactive: false, pane: 'prompts', color: '#ffd23f', weight: 1, dashArray: '4 3', fill: false }).addTo(map);
    });
    document.addEventListener('mouseup', (e) => {
      if (!drag) return;
      const d = drag;
      drag = null;
      map.dragging.enable();
      if (boxPreview) { boxPreview.remove(); boxPreview = null; }
      if (d.moved) {
        suppressClick = true;
        setTimeout(() => { suppressClick = false; }, 0);
        setBox(d.start, map.mouseEventToLatLng(e));
      }
    });

    map.on('mousemove', (e) => {
      const c = e.latlng;
      $('status-cursor').textContent = formatCoordinate(c.lng) + ', ' + formatCoordinate(c.lat);
      if (!state.preview || drag) return;
      state.hover = { x: c.lng, y: c.lat };
      const body = promptBody(true);
      if (hasPrompt(body)) segmenter.later(body);
    });
    map.on('mouseout', () => {
      if (!state.preview) return;
      state.hover = null;
      const body = promptBody(false);
      if (hasPrompt(body)) segmenter.later(body); else { segmenter.cancel(); showMask(null); }
    });
  }

  function formatCoordinate(v) {
    const units = state.store && state.store.units;
    return units === 'degree' ? v.toFixed(6) : v.toFixed(1);
  }

  // MARK: Panel and keys

  function setMode(mode) {
    state.mode = mode;
    for (const button of document.querySelectorAll('.mode')) {
      const on = button.dataset.mode === mode;
      button.classList.toggle('active', on);
      button.setAttribute('aria-checked', on ? 'true' : 'false');
    }
    $('map').classList.toggle('box-mode', mode === 'box');
    updateStatus();
  }

  function setPreview(on) {
    state.preview = on;
    $('preview').checked = on;
    if (!on) state.hover = null;
    promptsChanged();
  }

  function wirePanel() {
    for (const button of document.querySelectorAll('.mode')) {
      button.addEventListener('click', () => setMode(button.dataset.mode));
    }
    $('preview').addEventListener('change', (e) => setPreview(e.target.checked));
    $('save').addEventListener('click', save);
    $('undo-prompt').addEventListener('click', undoPrompt);
    $('clear').addEventListener('click', clearPrompts);
    $('undo-save').addEventListener('click', undoSave);
    $('generate').addEventListener('click', generateInView);
    $('generate-cancel').addEventListener('click', cancelGenerate);
    $('generate-save').addEventListener('click', saveGenerated);
    $('generate-discard').addEventListener('click', discardGenerated);
    $('show-grid').addEventListener('change', (e) => {
      if (e.target.checked) { gridLayer.addTo(map); loadGrid(); } else gridLayer.remove();
    });
    $('show-objects').addEventListener('change', (e) => { if (e.target.checked) objectsLayer.addTo(map); else objectsLayer.remove(); });
    for (const id of ['min-area', 'simplify', 'largest-only', 'fill-holes', 'regularize']) $(id).addEventListener('change', promptsChanged);
    $('multimask').addEventListener('change', () => { state.candidate = null; promptsChanged(); });

    document.addEventListener('keydown', (e) => {
      const target = e.target;
      if (target && (target.tagName === 'INPUT' && target.type !== 'checkbox' || target.tagName === 'TEXTAREA' || target.tagName === 'SELECT')) return;
      const key = e.key.toLowerCase();
      if ((e.ctrlKey || e.metaKey) && key === 'z') { e.preventDefault(); undoSave(); return; }
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      switch (key) {
        case 'tab': e.preventDefault(); setMode(MODES[(MODES.indexOf(state.mode) + (e.shiftKey ? 2 : 1)) % 3]); break;
        case 'p': setPreview(!state.preview); break;
        case 'z': undoPrompt(); break;
        case 'c': clearPrompts(); break;
        case 's': e.preventDefault(); save(); break;
        case 'escape': clearPrompts(); break;
        default: return;
      }
    });
  }

  function updateStatus() {
    const fg = state.points.filter((p) => p.label === 1).length;
    const bg = state.points.length - fg;
    const parts = [];
    if (fg) parts.push(fg + ' FG');
    if (bg) parts.push(bg + ' BG');
    if (state.box) parts.push('box');
    const mode = { fg: 'foreground', bg: 'background', box: 'box' }[state.mode];
    $('status-prompts').textContent = 'Prompts: ' + (parts.length ? parts.join(' · ') : 'none') + ' — ' + mode + (state.preview ? ', preview' : '');
    $('status-objects').textContent = 'Objects: ' + state.objects;
    $('status-latency').textContent = state.latencyMs === null ? 'Last: —'
      : 'Last: ' + Math.round(state.latencyMs) + ' ms' + (state.serverMs ? ' (server ' + Math.round(state.serverMs) + ' ms)' : '');
    const m = state.mask;
    $('status-score').textContent = m && m.features ? 'Mask: ' + m.features.length + ' polygon' + (m.features.length === 1 ? '' : 's') +
      ', score ' + m.score.toFixed(2) + ', tile ' + m.tile + (m.level ? ' (level ' + m.level + ')' : '') +
      (m.clipped ? ', may be cut' : '') : '';
    $('status-encoding').textContent = encodingText(state.encoding);
  }

  start();
})();
