"""The page at ``GET /``: choose or drop an image, see its mask, the overlay and the class legend.

Self-contained (no CDN, no build step): plain HTML, CSS and a few lines of JavaScript that
post the image to ``/predict`` three times (mask, ``?overlay=1``, ``?format=json`` for the
legend); the three requests arrive together and the service batches them.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>segtrain serve</title>
<style>
  body { font: 15px system-ui, sans-serif; margin: 24px; color: #222; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  #model { color: #666; margin-bottom: 12px; }
  #drop { border: 2px dashed #999; border-radius: 8px; padding: 20px; text-align: center; max-width: 640px; }
  #drop.over { border-color: #1a73e8; background: #eef4fe; }
  #status { margin: 10px 0; min-height: 1.2em; }
  #status.error { color: #b00020; }
  .panels { display: flex; flex-wrap: wrap; gap: 16px; }
  figure { margin: 0; }
  figure img { width: 256px; border: 1px solid #ccc; image-rendering: pixelated; }
  figure img:not([src]) { visibility: hidden; }
  figcaption { color: #555; font-size: 13px; }
  #legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 4px 20px; max-width: 1000px; }
  .swatch { display: inline-block; width: 14px; height: 14px; vertical-align: -2px; margin-right: 6px; border: 1px solid #0003; }
</style>
</head>
<body>
<h1>segtrain serve</h1>
<div id="model"></div>
<div id="drop">Drop an image here, or <input type="file" id="file" accept="image/*"></div>
<div id="status"></div>
<div class="panels">
  <figure><img id="input" alt=""><figcaption>image</figcaption></figure>
  <figure><img id="mask" alt=""><figcaption>mask</figcaption></figure>
  <figure><img id="overlay" alt=""><figcaption>overlay</figcaption></figure>
</div>
<ul id="legend"></ul>
<script>
const $ = (id) => document.getElementById(id);
fetch("health").then((r) => r.json()).then((h) => {
  $("model").textContent = `${h.model} (${h.runner}, ${h.classes} classes)`;
});
async function post(file, query) {
  const body = new FormData();
  body.append("file", file);
  const response = await fetch("predict" + query, { method: "POST", body });
  if (!response.ok) throw new Error((await response.json()).error);
  return response;
}
async function show(file) {
  const status = $("status");
  status.className = "";
  status.textContent = `predicting ${file.name} ...`;
  $("input").src = URL.createObjectURL(file);
  try {
    const [mask, over, json] = await Promise.all([post(file, ""), post(file, "?overlay=1"), post(file, "?format=json")]);
    $("mask").src = URL.createObjectURL(await mask.blob());
    $("overlay").src = URL.createObjectURL(await over.blob());
    const shares = await json.json();
    const legend = $("legend");
    legend.replaceChildren(...shares.classes.map((c) => {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = c.color;
      li.append(swatch, `${c.name}: ${(100 * c.share).toFixed(1)} %`);
      return li;
    }));
    status.textContent = `${file.name}: ${shares.width}x${shares.height}`;
  } catch (err) {
    status.className = "error";
    status.textContent = err.message;
  }
}
$("file").addEventListener("change", (e) => e.target.files[0] && show(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) show(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""
