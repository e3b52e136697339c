// geoseg map page: open an image, prompt it with points / a box / text, see the mask, download it.
//
// The map is a plain canvas. A georeferenced image is drawn in lon/lat (equirectangular,
// x scaled by cos(latitude) so shapes keep their proportions) through the affine
// pixel -> lon/lat fitted by the server; a plain image is drawn in pixel coordinates.
// No basemap tiles: the graticule, the scale bar and the coordinate read-out give the
// location. Prompts are always sent to the server in pixel coordinates.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("map");
  const ctx = canvas.getContext("2d");

  const S = {
    img: null, // ImageInfo from the server
    preview: null, // HTMLImageElement of the display RGB
    A: [1, 0, 0, 0, 1, 0], // pixel -> world affine (a, b, c, d, e, f)
    Ainv: [1, 0, 0, 0, 1, 0],
    geo: false,
    kx: 1, // x stretch of the map (cos latitude)
    ys: 1, // +1: world y grows downwards (pixels), -1: upwards (latitude)
    view: { cx: 0, cy: 0, s: 1 }, // world centre and CSS pixels per world unit
    points: [],
    labels: [],
    box: null, // pixel box [x0, y0, x1, y1]
    overlay: null,
    features: [],
    result: null,
    drag: null,
    seq: 0, // prompt requests: an answer to an older one (or for another image) is dropped
    upload: 0, // uploads and band changes: only the latest one opens its image
    file: null, // the File this page opened the current image from (to open it again), null for a link
    bands: null, // the bands chosen on the page for it ([r, g, b]), null: the file's default
    maxImages: null, // how many images the server keeps open (GET /api/health)
    maxMasks: null, // how many masks it keeps per image
    W: 0,
    H: 0,
    dpr: 1,
  };

  // -- coordinates ----------------------------------------------------------------------
  const invert = (m) => {
    const [a, b, c, d, e, f] = m;
    const det = a * e - b * d;
    return [e / det, -b / det, (b * f - c * e) / det, -d / det, a / det, (c * d - a * f) / det];
  };
  const apply = (m, x, y) => [m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]];
  const pixelToWorld = (px, py) => apply(S.A, px, py);
  const worldToPixel = (wx, wy) => apply(S.Ainv, wx, wy);
  const worldToScreen = (wx, wy) => [
    S.W / 2 + (wx - S.view.cx) * S.view.s * S.kx,
    S.H / 2 + S.ys * (wy - S.view.cy) * S.view.s,
  ];
  const screenToWorld = (sx, sy) => [
    S.view.cx + (sx - S.W / 2) / (S.view.s * S.kx),
    S.view.cy + (sy - S.H / 2) / (S.ys * S.view.s),
  ];
  const pixelToScreen = (px, py) => worldToScreen(...pixelToWorld(px, py));
  const screenToPixel = (sx, sy) => worldToPixel(...screenToWorld(sx, sy));

  function pixelTransform() {
    // canvas transform taking image pixels to device pixels
    const [a, b, c, d, e, f] = S.A;
    const k = S.view.s * S.kx;
    const l = S.ys * S.view.s;
    const r = S.dpr;
    return [
      r * k * a, r * l * d, r * k * b, r * l * e,
      r * (S.W / 2 + k * (c - S.view.cx)), r * (S.H / 2 + l * (f - S.view.cy)),
    ];
  }

  // -- drawing --------------------------------------------------------------------------
  function resize() {
    S.dpr = window.devicePixelRatio || 1;
    S.W = canvas.clientWidth;
    S.H = canvas.clientHeight;
    canvas.width = Math.round(S.W * S.dpr);
    canvas.height = Math.round(S.H * S.dpr);
    draw();
  }

  function fitView() {
    if (!S.img) return;
    const { width: w, height: h } = S.img;
    const cs = [[0, 0], [w, 0], [w, h], [0, h]].map(([x, y]) => pixelToWorld(x, y));
    const xs = cs.map((c) => c[0]);
    const ys = cs.map((c) => c[1]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    S.view.cx = (x0 + x1) / 2;
    S.view.cy = (y0 + y1) / 2;
    S.view.s = 0.92 * Math.min(S.W / ((x1 - x0) * S.kx), S.H / (y1 - y0));
  }

  function niceStep(v, down = false) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    const ms = down ? [5, 2, 1] : [1, 2, 5, 10];
    for (const m of ms) if (down ? m * p <= v : m * p >= v) return m * p;
    return down ? p : 10 * p;
  }

  function haloText(text, x, y, align = "left", base = "alphabetic") {
    ctx.textAlign = align;
    ctx.textBaseline = base;
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(255,255,255,0.85)";
    ctx.strokeText(text, x, y);
    ctx.fillStyle = "#1d2329";
    ctx.fillText(text, x, y);
  }

  function formatDeg(v, step, pos, neg) {
    const dec = Math.max(0, -Math.floor(Math.log10(step)));
    return `${Math.abs(v).toFixed(dec)}°${v >= 0 ? pos : neg}`;
  }

  function drawGraticule() {
    const [wx0, wy0] = screenToWorld(0, 0);
    const [wx1, wy1] = screenToWorld(S.W, S.H);
    const [xa, xb] = [Math.min(wx0, wx1), Math.max(wx0, wx1)];
    const [ya, yb] = [Math.min(wy0, wy1), Math.max(wy0, wy1)];
    const sx = niceStep((xb - xa) / 6);
    const sy = niceStep((yb - ya) / 6);
    ctx.save();
    ctx.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
    ctx.font = "11px ui-monospace, monospace";
    ctx.strokeStyle = "rgba(40,60,80,0.35)";
    ctx.lineWidth = 1;
    ctx.setLineDash([4, 4]);
    for (let x = Math.ceil(xa / sx) * sx; x <= xb; x += sx) {
      const [px] = worldToScreen(x, 0);
      ctx.beginPath();
      ctx.moveTo(px, 0);
      ctx.lineTo(px, S.H);
      ctx.stroke();
    }
    for (let y = Math.ceil(ya / sy) * sy; y <= yb; y += sy) {
      const [, py] = worldToScreen(0, y);
      ctx.beginPath();
      ctx.moveTo(0, py);
      ctx.lineTo(S.W, py);
      ctx.stroke();
    }
    ctx.setLineDash([]);
    for (let x = Math.ceil(xa / sx) * sx; x <= xb; x += sx) {
      const [px] = worldToScreen(x, 0);
      haloText(S.geo ? formatDeg(x, sx, "E", "W") : `x ${Math.round(x)}`, px + 3, S.H - 6);
    }
    for (let y = Math.ceil(ya / sy) * sy; y <= yb; y += sy) {
      const [, py] = worldToScreen(0, y);
      haloText(S.geo ? formatDeg(y, sy, "N", "S") : `y ${Math.round(y)}`, 4, py - 3);
    }
    ctx.restore();
  }

  function drawScaleBar() {
    // metres (or image pixels) per CSS pixel along the map's vertical axis
    const perPx = S.geo ? 111320 / S.view.s : 1 / S.view.s;
    const len = niceStep(perPx * 120, true);
    const bar = len / perPx;
    const label = S.geo ? (len >= 1000 ? `${len / 1000} km` : `${len} m`) : `${len} px`;
    const x = 14;
    const y = S.H - 26;
    ctx.save();
    ctx.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
    ctx.fillStyle = "rgba(255,255,255,0.85)";
    ctx.fillRect(x - 6, y - 18, bar + 12, 28);
    ctx.strokeStyle = "#1d2329";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x, y - 5);
    ctx.lineTo(x, y);
    ctx.lineTo(x + bar, y);
    ctx.lineTo(x + bar, y - 5);
    ctx.stroke();
    ctx.font = "11px system-ui, sans-serif";
    haloText(label, x + bar / 2, y - 7, "center");
    ctx.restore();
    canvas.dataset.scale = label;
  }

  function drawPolygons() {
    if (!S.features.length) return;
    ctx.save();
    ctx.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
    ctx.strokeStyle = "#ffd400";
    ctx.lineWidth = 1.5;
    for (const f of S.features) {
      const g = f.geometry;
      const polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
      for (const rings of polys) {
        ctx.beginPath();
        for (const ring of rings) {
          ring.forEach(([x, y], i) => {
            const [sx, sy] = worldToScreen(x, y); // GeoJSON is lon/lat (georeferenced) or pixels (plain)
            if (i === 0) ctx.moveTo(sx, sy);
            else ctx.lineTo(sx, sy);
          });
          ctx.closePath();
        }
        ctx.stroke();
      }
    }
    ctx.restore();
  }

  function pixelQuad(x0, y0, x1, y1) {
    ctx.beginPath();
    [[x0, y0], [x1, y0], [x1, y1], [x0, y1]].forEach(([x, y], i) => {
      const [sx, sy] = pixelToScreen(x, y);
      if (i === 0) ctx.moveTo(sx, sy);
      else ctx.lineTo(sx, sy);
    });
    ctx.closePath();
  }

  function drawPrompts() {
    ctx.save();
    ctx.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
    if (S.box) {
      ctx.strokeStyle = "#ff7a00";
      ctx.lineWidth = 2;
      pixelQuad(...S.box);
      ctx.stroke();
    }
    S.points.forEach(([x, y], i) => {
      const [sx, sy] = pixelToScreen(x, y);
      ctx.beginPath();
      ctx.arc(sx, sy, 6, 0, 2 * Math.PI);
      ctx.fillStyle = S.labels[i] ? "#22c55e" : "#ef4444";
      ctx.fill();
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    });
    if (S.drag && S.drag.rubber) {
      const { x0, y0, x1, y1 } = S.drag.rubber;
      ctx.setLineDash([5, 3]);
      ctx.strokeStyle = "#ff7a00";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    }
    ctx.restore();
  }

  function draw() {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#cfd8df";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!S.img) return;
    const { width: w, height: h } = S.img;
    ctx.setTransform(...pixelTransform());
    if (S.preview) {
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(S.preview, 0, 0, w, h);
    }
    if (S.overlay) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(S.overlay, 0, 0, w, h);
    }
    ctx.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
    ctx.strokeStyle = "#1d2329";
    ctx.lineWidth = 1;
    pixelQuad(0, 0, w, h);
    ctx.stroke();
    drawPolygons();
    drawGraticule();
    drawPrompts();
    drawScaleBar();
  }

  // -- messages -------------------------------------------------------------------------
  let msgTimer = null;
  // action: {label, run} adds a button; such a message stays until it is used or replaced
  function showMessage(text, kind = "error", action = null) {
    const m = $("message");
    m.textContent = text;
    if (action) {
      const b = document.createElement("button");
      b.type = "button";
      b.id = "message-action";
      b.textContent = action.label;
      b.addEventListener("click", () => {
        m.hidden = true;
        action.run();
      });
      m.append(b);
    }
    m.className = kind === "error" ? "" : "info";
    m.hidden = false;
    clearTimeout(msgTimer);
    if (!action) msgTimer = setTimeout(() => { m.hidden = true; }, 8000);
  }
  const setStatus = (text) => { $("status").textContent = text; };

  async function readJson(r) {
    try {
      return await r.json();
    } catch {
      return { detail: `HTTP ${r.status}` };
    }
  }

  // -- images ---------------------------------------------------------------------------
  // a 404 whose code says the image id is not (or no longer) held by the server
  const isGone = (r, data) => r.status === 404 && ["image_dropped", "image_closed", "unknown_image"].includes(data.code);

  // the server no longer holds the image shown: say why in plain words and offer to open it again
  function imageGone(info, data) {
    const name = info ? info.name : "the image";
    let text;
    if (data.code === "image_dropped") {
      const kept = S.maxImages ? `the ${S.maxImages} most recently used images` : "only the most recently used images";
      text = `The server dropped ${name} because too many images were open: it keeps ${kept}, and more were opened since.`;
    } else if (data.code === "image_closed") {
      text = `${name} was closed on the server.`;
    } else {
      text = `The server no longer holds ${name} (it was restarted, or the image was closed).`;
    }
    clearResult(); // its masks and downloads are gone with it; the prompts stay and are sent again
    draw();
    setStatus("image no longer open on the server");
    const file = S.file;
    const bands = S.bands;
    showMessage(text, "error", file
      ? { label: "Open it again", run: () => openFile(file, bands, true) }
      : { label: "Choose the file…", run: () => $("file-input").click() });
  }

  // keep: the same image again (other bands, or opened again): keep the prompts and the view, answer them again
  async function openFile(file, bands = null, keep = false) {
    const upload = ++S.upload;
    setStatus(`uploading ${file.name} …`);
    const fd = new FormData();
    fd.append("file", file);
    if (bands) fd.append("bands", bands.join(","));
    let r;
    try {
      r = await fetch("/api/images", { method: "POST", body: fd });
    } catch (err) {
      showMessage(`the server cannot be reached (${err})`);
      setStatus("offline");
      return;
    }
    const data = await readJson(r);
    if (upload !== S.upload) return; // another file was opened meanwhile: it wins
    if (!r.ok) {
      showMessage(data.detail || `upload failed (HTTP ${r.status})`);
      setStatus("upload failed");
      return;
    }
    S.file = file;
    S.bands = bands;
    await loadImage(data, keep);
  }

  async function showBands(bands) {
    const info = S.img;
    const upload = ++S.upload;
    setStatus(`showing bands ${bands.join(", ")} …`);
    let r;
    try {
      r = await fetch(`/api/images/${info.image_id}/bands`, {
        // close_previous: the view with the old bands is closed on the server (it keeps it if another tab or client
        // opened it too), so a band change does not take one of its --max-images places
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ bands, close_previous: true }),
      });
    } catch (err) {
      showMessage(`the server cannot be reached (${err})`);
      setStatus("offline");
      return;
    }
    const data = await readJson(r);
    if (upload !== S.upload) return;
    if (!r.ok) {
      if (isGone(r, data)) {
        S.bands = bands; // opened again, it is shown with the bands just chosen
        imageGone(info, data);
      } else {
        showMessage(data.detail || `HTTP ${r.status}`);
        setStatus("bands not changed");
        updateBandPicker(info);
      }
      return;
    }
    S.bands = data.rgb_bands;
    await loadImage(data, true);
  }

  function updateBandPicker(info) {
    // as in a GIS's multiband renderer: pick the bands shown as red, green and blue, for images whose
    // colours are not declared (a Sentinel-2 stack B2,B3,B4,B8,...) or that have more than three bands
    const n = info.bands;
    const form = $("band-picker");
    form.hidden = !(n > 3 || (n > 1 && !info.rgb_declared));
    if (form.hidden) return;
    const rgb = info.rgb_bands.length === 1 ? Array(3).fill(info.rgb_bands[0]) : info.rgb_bands;
    ["band-r", "band-g", "band-b"].forEach((id, k) => {
      const sel = $(id);
      sel.replaceChildren(...Array.from({ length: n }, (_, i) => {
        const name = (info.band_names || [])[i];
        return new Option(name ? `${i + 1}: ${name}` : `${i + 1}`, String(i + 1));
      }));
      sel.value = String(rgb[k]);
    });
  }

  async function loadImage(info, keep = false) {
    S.img = info;
    if (!keep) {
      S.points = [];
      S.labels = [];
      S.box = null;
      S.preview = null; // not the previous image's pixels in this one's frame
    }
    clearResult();
    if (info.georeferenced) {
      S.A = info.geo.pixel_to_lonlat;
      S.geo = true;
      S.ys = -1;
      const lat0 = info.geo.corners_lonlat.reduce((t, c) => t + c[1], 0) / 4;
      S.kx = Math.cos((lat0 * Math.PI) / 180);
    } else {
      S.A = [1, 0, 0, 0, 1, 0];
      S.geo = false;
      S.ys = 1;
      S.kx = 1;
    }
    S.Ainv = invert(S.A);
    const p = new Image();
    p.src = `/api/images/${info.image_id}/preview.jpg`;
    try {
      await p.decode();
    } catch {
      if (S.img !== info) return;
      const r = await fetch(`/api/images/${info.image_id}`);
      const data = await readJson(r);
      if (S.img !== info) return;
      if (isGone(r, data)) imageGone(info, data);
      else showMessage(`the preview of ${info.name} cannot be shown (${data.detail || `HTTP ${r.status}`})`);
      return;
    }
    if (S.img !== info) return; // another image was opened meanwhile
    S.preview = p;
    if (!keep) fitView();
    draw();
    const where = info.georeferenced ? `${info.geo.crs}, on the map` : "not georeferenced: pixel coordinates";
    const shown = info.rgb_bands.length === 1 ? `band ${info.rgb_bands[0]} as grey` : `bands ${info.rgb_bands.join(",")} as RGB`;
    $("image-name").textContent =
      `${info.name} — ${info.width}×${info.height}, ${info.bands} band(s) ${info.dtype} (${shown}), ${where}`;
    updateBandPicker(info);
    canvas.dataset.image = info.image_id;
    canvas.dataset.georeferenced = info.georeferenced ? "1" : "0";
    setStatus(`image ready · embedding ${info.embedding_cached ? "cached" : `computed in ${Math.round(info.embed_ms)} ms`}`);
    history.replaceState(null, "", `?image=${info.image_id}`);
    if (keep && (S.points.length || S.box || $("instruction").value.trim())) predict();
  }

  // -- prompting ------------------------------------------------------------------------
  function clearResult() {
    S.seq++; // an answer still on its way belongs to prompts (or an image) no longer shown
    S.overlay = null;
    S.features = [];
    S.result = null;
    canvas.dataset.overlay = "0";
    for (const id of ["dl-geojson", "dl-tif", "dl-png"]) {
      const a = $(id);
      a.classList.add("disabled");
      a.setAttribute("aria-disabled", "true");
      a.removeAttribute("href");
    }
  }

  async function predict() {
    if (!S.img) {
      showMessage("open an image first");
      return;
    }
    const text = $("instruction").value.trim();
    if (!S.points.length && !S.box && !text) {
      clearResult();
      draw();
      return;
    }
    const body = {
      points: S.points, labels: S.labels, box: S.box, text: text || null, include: ["overlay", "geojson"],
    };
    const seq = ++S.seq;
    const t0 = performance.now();
    setStatus("segmenting …");
    let r;
    try {
      r = await fetch(`/api/images/${S.img.image_id}/predict`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
    } catch (err) {
      showMessage(`the server cannot be reached (${err})`);
      setStatus("offline");
      return;
    }
    const data = await readJson(r);
    if (seq !== S.seq) return; // a newer prompt was sent meanwhile
    if (isGone(r, data)) {
      imageGone(S.img, data);
      return;
    }
    if (!r.ok) {
      showMessage(data.detail || `HTTP ${r.status}`);
      setStatus(`error ${r.status}`);
      return;
    }
    const ov = new Image();
    ov.src = data.overlay_png;
    await ov.decode();
    if (seq !== S.seq) return;
    S.overlay = ov;
    S.features = data.geojson ? data.geojson.features : [];
    S.result = data;
    for (const [id, fmt] of Object.entries(DOWNLOADS)) {
      const a = $(id);
      a.href = data.downloads[fmt];
      a.setAttribute("download", data.filenames[fmt]); // the server's name: <image stem>_<mask id>.<format>
      a.classList.remove("disabled");
      a.removeAttribute("aria-disabled");
    }
    canvas.dataset.overlay = "1";
    canvas.dataset.maskArea = String(data.area_px);
    const ms = Math.round(performance.now() - t0);
    setStatus(
      `mask ${data.area_px.toLocaleString()} px · ${S.features.length} polygon(s) · score ${data.score.toFixed(2)} · ` +
      `${ms} ms (model ${Math.round(data.timing_ms.predict)} ms)`,
    );
    canvas.dataset.latencyMs = String(ms);
    const notes = (data.notes || []).join(" "); // e.g. an instruction unlike the model's training ones
    if (!data.area_px) showMessage(`nothing found${data.hint ? ": " + data.hint : ""}${notes ? " " + notes : ""}`, "info");
    else if (notes) showMessage(notes, "info");
    draw();
  }

  // -- downloads ------------------------------------------------------------------------
  const DOWNLOADS = { "dl-geojson": "geojson", "dl-tif": "tif", "dl-png": "png" };

  // fetched first, so a mask the server no longer holds is explained instead of a failed download
  async function download(id) {
    const a = $(id);
    const url = a.getAttribute("href");
    if (!url) return;
    const info = S.img;
    let r;
    try {
      r = await fetch(url);
    } catch (err) {
      showMessage(`the server cannot be reached (${err})`);
      return;
    }
    if (r.ok) {
      const blob = URL.createObjectURL(await r.blob());
      const save = document.createElement("a");
      save.href = blob;
      save.download = a.getAttribute("download");
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(blob), 60_000);
      return;
    }
    const data = await readJson(r);
    if (S.img !== info) return;
    if (isGone(r, data)) {
      imageGone(info, data);
    } else if (data.code === "mask_dropped") {
      const kept = S.maxMasks ? `the last ${S.maxMasks} masks` : "only the latest masks";
      showMessage(`This mask is no longer on the server: it keeps ${kept} of each image, and more were made on ` +
        `${info.name} since (in another tab or by another user). Segment again to make it anew and download it.`,
      "error", { label: "Segment again and download", run: async () => {
        await predict();
        if (S.result) download(id);
      } });
    } else {
      showMessage(`the download failed: ${data.detail || `HTTP ${r.status}`}`);
    }
  }

  function addPoint(sx, sy, label) {
    const [px, py] = screenToPixel(sx, sy);
    if (!(px >= 0 && py >= 0 && px < S.img.width && py < S.img.height)) {
      showMessage("click inside the image to add a point", "info");
      return;
    }
    S.points.push([Math.round(px * 10) / 10, Math.round(py * 10) / 10]);
    S.labels.push(label);
    draw();
    predict();
  }

  function setBoxFromScreen(x0, y0, x1, y1) {
    const cs = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]].map(([x, y]) => screenToPixel(x, y));
    const xs = cs.map((c) => c[0]);
    const ys = cs.map((c) => c[1]);
    const bx0 = Math.max(0, Math.min(...xs));
    const by0 = Math.max(0, Math.min(...ys));
    const bx1 = Math.min(S.img.width, Math.max(...xs));
    const by1 = Math.min(S.img.height, Math.max(...ys));
    if (bx1 - bx0 < 2 || by1 - by0 < 2) {
      showMessage("draw the box over the image", "info");
      return;
    }
    S.box = [bx0, by0, bx1, by1].map((v) => Math.round(v * 10) / 10);
    draw();
    predict();
  }

  const mode = () => document.querySelector('input[name="mode"]:checked').value;

  // -- events ---------------------------------------------------------------------------
  const local = (ev) => {
    const r = canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  };

  canvas.addEventListener("mousedown", (ev) => {
    if (ev.button !== 0 || !S.img) return;
    const [x, y] = local(ev);
    S.drag = { x0: x, y0: y, x, y, moved: false, shift: ev.shiftKey, mode: mode() };
  });

  window.addEventListener("mousemove", (ev) => {
    const [x, y] = local(ev);
    if (S.img) {
      const [wx, wy] = screenToWorld(x, y);
      const [px, py] = worldToPixel(wx, wy);
      const inside = px >= 0 && py >= 0 && px < S.img.width && py < S.img.height;
      const pix = inside ? `pixel ${Math.floor(px)}, ${Math.floor(py)}` : "outside the image";
      $("readout").textContent = S.geo
        ? `${Math.abs(wy).toFixed(6)}°${wy >= 0 ? "N" : "S"} ${Math.abs(wx).toFixed(6)}°${wx >= 0 ? "E" : "W"} · ${pix}`
        : pix;
    }
    const d = S.drag;
    if (!d) return;
    if (Math.hypot(x - d.x0, y - d.y0) > 4) d.moved = true;
    if (!d.moved) return;
    if (d.mode === "box") {
      d.rubber = { x0: d.x0, y0: d.y0, x1: x, y1: y };
    } else {
      S.view.cx -= (x - d.x) / (S.view.s * S.kx);
      S.view.cy -= (y - d.y) / (S.ys * S.view.s);
      canvas.classList.add("pan");
    }
    d.x = x;
    d.y = y;
    draw();
  });

  window.addEventListener("mouseup", (ev) => {
    const d = S.drag;
    if (!d) return;
    S.drag = null;
    canvas.classList.remove("pan");
    const [x, y] = local(ev);
    if (d.moved) {
      if (d.mode === "box") setBoxFromScreen(d.x0, d.y0, x, y);
      else draw();
      return;
    }
    if (d.mode === "pan") return;
    addPoint(x, y, d.mode === "neg" || d.shift ? 0 : 1);
  });

  canvas.addEventListener("contextmenu", (ev) => {
    ev.preventDefault();
    if (!S.img) return;
    const [x, y] = local(ev);
    addPoint(x, y, 0);
  });

  canvas.addEventListener("wheel", (ev) => {
    if (!S.img) return;
    ev.preventDefault();
    const [x, y] = local(ev);
    const [wx, wy] = screenToWorld(x, y);
    S.view.s *= Math.exp(-ev.deltaY * 0.0015);
    S.view.cx = wx - (x - S.W / 2) / (S.view.s * S.kx);
    S.view.cy = wy - (y - S.H / 2) / (S.ys * S.view.s);
    draw();
  }, { passive: false });

  canvas.addEventListener("keydown", (ev) => {
    if (ev.key === "Backspace" && S.points.length) {
      S.points.pop();
      S.labels.pop();
      draw();
      predict();
    } else if (ev.key === "Escape") {
      $("clear").click();
    } else if (ev.key === "f") {
      fitView();
      draw();
    }
  });

  canvas.addEventListener("dragover", (ev) => ev.preventDefault());
  canvas.addEventListener("drop", (ev) => {
    ev.preventDefault();
    if (ev.dataTransfer.files.length) openFile(ev.dataTransfer.files[0]);
  });

  $("file-input").addEventListener("change", (ev) => {
    if (ev.target.files.length) openFile(ev.target.files[0]);
    ev.target.value = ""; // choosing the same file again (after a failed upload) must open it again
  });

  $("band-picker").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!S.img) return;
    const bands = ["band-r", "band-g", "band-b"].map((id) => Number($(id).value));
    const now = S.img.rgb_bands.length === 1 ? Array(3).fill(S.img.rgb_bands[0]) : S.img.rgb_bands;
    if (bands.every((b, k) => b === now[k])) return; // shown already
    showBands(bands);
  });

  for (const id of Object.keys(DOWNLOADS)) {
    $(id).addEventListener("click", (ev) => {
      ev.preventDefault();
      download(id);
    });
  }

  $("text-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    predict();
  });

  $("clear").addEventListener("click", () => {
    S.points = [];
    S.labels = [];
    S.box = null;
    $("instruction").value = "";
    clearResult();
    draw();
    setStatus("cleared");
  });

  window.addEventListener("resize", resize);

  // -- start ----------------------------------------------------------------------------
  async function start() {
    resize();
    try {
      const r = await fetch("/api/backend");
      const b = await readJson(r);
      $("backend").textContent = r.ok ? `backend: ${b.name} (${b.capabilities.join(", ")})` : b.detail;
      if (r.ok && !b.capabilities.includes("text")) {
        // the server would refuse an instruction with a 422: say so before anyone types one
        $("instruction").disabled = true;
        $("instruction").placeholder = `backend ${b.name} takes points and boxes, not instructions`;
      }
    } catch {
      $("backend").textContent = "backend: unknown";
    }
    try {
      const h = await readJson(await fetch("/api/health"));
      S.maxImages = (h.limits || {}).max_images || null;
      S.maxMasks = (h.limits || {}).max_masks || null;
    } catch {
      S.maxImages = null;
      S.maxMasks = null;
    }
    const id = new URLSearchParams(location.search).get("image");
    if (id) {
      const r = await fetch(`/api/images/${encodeURIComponent(id)}`);
      if (r.ok) await loadImage(await r.json());
      else if (r.status === 404) {
        // a link to an image the server no longer holds (restarted, or more images opened since)
        showMessage("the image of this link is no longer open on the server: open the file again", "info",
          { label: "Choose the file…", run: () => $("file-input").click() });
        history.replaceState(null, "", location.pathname);
      } else showMessage((await readJson(r)).detail);
    }
    document.body.dataset.ready = "1";
  }
  // a small handle for automation (tests, scripts): map coordinates and the current result
  window.geosegMap = {
    pixelToScreen: (x, y) => pixelToScreen(x, y),
    screenToPixel: (x, y) => screenToPixel(x, y),
    result: () => S.result,
    image: () => S.img,
  };
  start();
})();
