"""segtrain serve: the HTTP API in-process (every bad input is a 4xx), a real server process on
127.0.0.1, the page in headless Chromium, and `segtrain predict --video`.

The oracle for every mask is `segtrain predict` itself on the same image file (run through the
CLI), and for JSON shares a NumPy count of that mask.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import concurrent.futures
import io
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import fit_tiny_unet, need_module, sample_config

need_module("fastapi", "serve")
need_module("httpx", "dev")
cv2 = need_module("cv2", "export")

from fastapi.testclient import TestClient  # noqa: E402

from segtrain.cli import main as cli_main  # noqa: E402
from segtrain.data.formats import get_format  # noqa: E402
from segtrain.data.formats.decode import color_table  # noqa: E402
from segtrain.data.formats.splits import list_samples  # noqa: E402
from segtrain.serve.app import Limits, create_app  # noqa: E402
from segtrain.data.formats.palette import ColorTable  # noqa: E402
from segtrain.serve.runners import Runner, load_runner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESIZE = [48, 48]  # the sample images are 64x64: every request is predicted at another size and resized back


@pytest.fixture(scope="module")
def run(sample_root, tmp_path_factory):
    """<tmp>/run/{config.yaml (data.resize 48x48), checkpoints/best.keras}: a tiny U-Net fitted for a few seconds."""
    folder = tmp_path_factory.mktemp("serve") / "run"
    config = sample_config(sample_root, resize=RESIZE, output_dir=folder, train={"mixed_precision": "none"},
                           model={"name": "unet", "width": 4, "depth": 2, "decoder": "transposed", "norm": "batch"})
    fmt = get_format("voc")
    decoded = [fmt.read(s, config.data) for s in list_samples(config.data, "train")]
    x = np.stack([keras.ops.convert_to_numpy(keras.ops.image.resize(d.image.astype("float32"), RESIZE)) for d in decoded])
    y = np.stack([np.asarray(Image.fromarray(d.label).resize(RESIZE[::-1], Image.NEAREST)) for d in decoded]).astype("int32")
    fit_tiny_unet(config, x, y, width=4, learning_rate=0.02, epochs=6)
    return folder, config


@pytest.fixture(scope="module")
def images(run, tmp_path_factory):
    """Two PNG files: a val image (64x64) and a 50x60 crop of another, and `segtrain predict`'s outputs for them."""
    _, config = run
    folder = tmp_path_factory.mktemp("images")
    samples = list_samples(config.data, "val")
    a = np.asarray(Image.open(samples[0].image).convert("RGB"))
    b = np.asarray(Image.open(samples[1].image).convert("RGB"))[5:55, 2:62]
    Image.fromarray(a).save(folder / "a.png")
    Image.fromarray(b).save(folder / "b.png")
    return folder


@pytest.fixture(scope="module")
def predicted(run, images, tmp_path_factory):
    """`segtrain predict --overlay` on the same files with the run's config: the oracle."""
    folder, _ = run
    out = tmp_path_factory.mktemp("predicted")
    assert cli_main(["predict", "--checkpoint", str(folder / "checkpoints" / "best.keras"), "--input", str(images),
                     "--output", str(out), "--config", str(folder / "config.yaml"), "--overlay"]) == 0
    return out


@pytest.fixture(scope="module")
def client(run):
    folder, config = run
    runner = load_runner(folder / "checkpoints" / "best.keras", config.data.resize)
    app = create_app(runner, color_table(config.data), Limits(max_upload_bytes=200_000, max_pixels=1_000_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _post(client, path, query=""):
    with open(path, "rb") as fh:
        return client.post("/predict" + query, files={"file": (Path(path).name, fh, "image/png")})


# --------------------------------------------------------------------------- the API in-process


def test_mask_overlay_and_json_equal_segtrain_predicts(client, images, predicted, run):
    _, config = run
    table = color_table(config.data)
    for stem in ("a", "b"):
        want = np.asarray(Image.open(predicted / f"{stem}.png"))
        response = _post(client, images / f"{stem}.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        png = Image.open(io.BytesIO(response.content))
        assert png.mode == "P" and png.getpalette()[:12] == table.pil_palette()[:12]
        mask = np.asarray(png)
        assert mask.shape == want.shape  # at the upload's own size, though the model ran at 48x48
        np.testing.assert_array_equal(mask, want)
        assert len(np.unique(mask)) > 1  # a trained model, not a constant mask

        over = _post(client, images / f"{stem}.png", "?overlay=1")
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(over.content))),
                                      np.asarray(Image.open(predicted / "overlays" / f"{stem}.png")))

        shares = _post(client, images / f"{stem}.png", "?format=json").json()
        counts = np.bincount(want.ravel(), minlength=4) / want.size
        assert [c["name"] for c in shares["classes"]] == list(table.names)
        np.testing.assert_allclose([c["share"] for c in shares["classes"]], counts, atol=1e-12)
        assert (shares["width"], shares["height"]) == (want.shape[1], want.shape[0])
    raw = client.post("/predict", content=(images / "a.png").read_bytes(), headers={"content-type": "image/png"})
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(raw.content))), np.asarray(Image.open(predicted / "a.png")))


def _bomb_png(width=60000, height=60000) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` pixels (3.6 GP): what a decompression bomb shows Pillow first."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


def test_every_bad_input_is_a_4xx_with_one_message_and_the_service_lives_on(client, images):
    png = (images / "a.png").read_bytes()
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1200, 1000, 3), dtype=np.uint8)).save(big, format="BMP")
    cases = {
        "not an image": (client.post("/predict", files={"file": ("a.png", b"hello, not a picture", "image/png")}), 400, "not an image"),
        "truncated": (client.post("/predict", files={"file": ("a.png", png[: len(png) // 2], "image/png")}), 400, "truncated"),
        "empty": (client.post("/predict", files={"file": ("a.png", b"", "image/png")}), 400, "empty"),
        "bomb": (client.post("/predict", files={"file": ("bomb.png", _bomb_png(), "image/png")}), 413, "decompression bomb"),
        "too many pixels": (client.post("/predict", content=_bomb_png(1100, 1000), headers={"content-type": "image/png"}), 413, "1100x1000"),
        "over-size upload": (client.post("/predict", files={"file": ("big.bmp", big.getvalue(), "image/bmp")}), 413, "over the server's limit"),
        "over-size stream": (client.post("/predict", content=iter([png] * 200), headers={"content-type": "image/png"}), 413, "over the server's limit"),
        "wrong content type": (client.post("/predict", content=b'{"image": 1}', headers={"content-type": "application/json"}), 415, "multipart/form-data"),
        "no content type": (client.post("/predict", content=png, headers={"content-type": ""}), 415, "(none)"),
        "no file field": (client.post("/predict", files={"image": ("a.png", png, "image/png")}), 400, "'file'"),
        "file as a text field": (client.post("/predict", data={"file": "a.png"}, files={"x": ("x", b"", "text/plain")}), 400, "'file'"),
        "url-encoded form": (client.post("/predict", data={"file": "a.png"}), 415, "multipart/form-data"),
        "bad format": (_post(client, images / "a.png", "?format=xml"), 400, "format=json"),
        "bad overlay flag": (_post(client, images / "a.png", "?overlay=maybe"), 400, "overlay=1"),
        "GET /predict": (client.get("/predict"), 405, "Method Not Allowed"),
        "unknown path": (client.get("/nope"), 404, "Not Found"),
    }
    for name, (response, status, words) in cases.items():
        assert response.status_code == status, (name, response.status_code, response.text)
        body = response.json()
        assert list(body) == ["error"] and "\n" not in body["error"] and words in body["error"], (name, body)
    assert client.get("/health").json()["status"] == "ok"
    assert _post(client, images / "a.png").status_code == 200


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and "?overlay=1" in page.text and "format=json" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere (no CDN)


# --------------------------------------------------------------------------- a real server process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    """`segtrain serve --checkpoint ...` in its own process on a free 127.0.0.1 port (batches stay open 300 ms)."""
    folder, _ = run
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "segtrain", "serve", "--checkpoint", str(folder / "checkpoints" / "best.keras"),
                                    "--host", "127.0.0.1", "--port", str(port), "--max-wait-ms", "300"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    assert json.load(response)["status"] == "ok"
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"segtrain serve did not come up: {log.read_text()}") from None
                time.sleep(0.3)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def _post_url(url, data: bytes, query="") -> bytes:
    request = urllib.request.Request(url + "/predict" + query, data=data, headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


@pytest.mark.slow  # starting a server process (TensorFlow, the model) takes ~40 s on 2 shared cores
def test_real_server_answers_like_segtrain_predict_and_batches_concurrent_requests(server, images, predicted):
    url, log = server
    assert "serving" in log.read_text() and f"{url}/" in log.read_text()
    files = [images / "a.png", images / "b.png"] * 4
    with concurrent.futures.ThreadPoolExecutor(len(files)) as pool:
        answers = list(pool.map(lambda f: _post_url(url, f.read_bytes()), files))
    for path, answer in zip(files, answers):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(answer))), np.asarray(Image.open(predicted / path.name)))
    with urllib.request.urlopen(url + "/health") as response:
        health = json.load(response)
    assert health["largest_batch"] > 1 and health["batches"] < len(files)  # requests that arrived together shared passes
    with pytest.raises(urllib.error.HTTPError) as err:
        _post_url(url, b"not an image")
    assert err.value.code == 400 and "not an image" in json.load(err.value)["error"]


def test_serve_cli_errors_are_one_line(run, tmp_path, capsys):
    folder, _ = run
    assert cli_main(["serve", "--model", str(tmp_path / "m.pt"), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'm.pt'}: model file not found") and err.count("\n") == 1
    (tmp_path / "m.pt").write_bytes(b"x")
    assert cli_main(["serve", "--model", str(tmp_path / "m.pt"), "--port", "0"]) == 1
    assert "segtrain serve runs .keras, .onnx, .tflite files" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli_main(["serve", "--checkpoint", str(folder / "checkpoints" / "best.keras"), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --host 127.0.0.1 --port") and "choose another --port" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- exported models


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_exported_model_serves_the_keras_masks(run, images, predicted, tmp_path, fmt):
    need_module("onnxruntime" if fmt == "onnx" else "tensorflow", "export")
    need_module("tf2onnx", "export")
    from segtrain.export import export_model

    folder, config = run
    model = keras.models.load_model(folder / "checkpoints" / "best.keras")
    path = export_model(model, fmt, tmp_path / f"m.{fmt}", size=RESIZE, batch=None if fmt == "tflite" else 1)
    runner = load_runner(path)
    assert runner.size == tuple(RESIZE) and runner.classes == 4
    with TestClient(create_app(runner, color_table(config.data))) as c:
        for stem in ("a", "b"):
            mask = np.asarray(Image.open(io.BytesIO(_post(c, images / f"{stem}.png").content)))
            want = np.asarray(Image.open(predicted / f"{stem}.png"))
            assert mask.shape == want.shape and (mask == want).mean() > 0.995  # float export: logits within 1e-4 of Keras's


# --------------------------------------------------------------------------- the page in headless Chromium


@pytest.mark.slow
def test_page_in_headless_chromium_shows_the_overlay(server, images, run, tmp_path):
    webdriver = need_module("selenium.webdriver", "dev")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for binary in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(binary).exists():
            from conftest import missing

            missing(binary, "apt-get install chromium chromium-driver")
    url, _ = server
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,760"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url + "/")
        driver.find_element(By.ID, "file").send_keys(str(images / "a.png"))
        loaded = "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0;"
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(loaded, "overlay"))
        assert driver.execute_script(loaded, "mask")
        overlay_img = driver.find_element(By.ID, "overlay")
        assert overlay_img.is_displayed() and driver.execute_script("return arguments[0].naturalWidth", overlay_img) == 64
        legend = driver.find_elements(By.CSS_SELECTOR, "#legend li")
        assert [li.text.split(":")[0] for li in legend] == list(color_table(run[1].data).names)
        assert "a.png: 64x64" in driver.find_element(By.ID, "status").text
        # docs/serve-page.png is this screenshot; SEGTRAIN_UPDATE_DOCS=1 refreshes it (a test run leaves the tree clean).
        shot = REPO / "docs" / "serve-page.png" if os.environ.get("SEGTRAIN_UPDATE_DOCS") == "1" else tmp_path / "page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()


# --------------------------------------------------------------------------- predict --video


def test_predict_video_writes_the_per_image_overlays(run, tmp_path, capsys):
    folder, config = run
    samples = list_samples(config.data, "val")
    frames = [np.asarray(Image.open(s.image).convert("RGB"))[:, :60] for s in samples[:3]] * 2  # 64x60: not the training size
    source = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 5, (60, 64))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    decoded = []
    capture = cv2.VideoCapture(str(source))
    while (got := capture.read())[0]:
        decoded.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))  # the frames as the model sees them (MJPG is lossy)
    checkpoint = folder / "checkpoints" / "best.keras"
    out = tmp_path / "out.mkv"  # lossless FFV1: the written frames can be compared exactly
    assert cli_main(["predict", "--checkpoint", str(checkpoint), "--video", str(source), "--output", str(out),
                     "--config", str(folder / "config.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "wrote 6 frame(s)" in printed and "frames/s)" in printed
    written = []
    capture = cv2.VideoCapture(str(out))
    while (got := capture.read())[0]:
        written.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    assert len(written) == len(frames) == len(decoded)
    stills = tmp_path / "stills"
    stills.mkdir()
    for i, frame in enumerate(decoded):
        Image.fromarray(frame).save(stills / f"f{i}.png")
    assert cli_main(["predict", "--checkpoint", str(checkpoint), "--input", str(stills), "--output", str(tmp_path / "p"),
                     "--config", str(folder / "config.yaml"), "--overlay"]) == 0
    for i, frame in enumerate(written):
        np.testing.assert_array_equal(frame, np.asarray(Image.open(tmp_path / "p" / "overlays" / f"f{i}.png")))
    avi = tmp_path / "out.avi"
    assert cli_main(["predict", "--checkpoint", str(checkpoint), "--video", str(source), "--output", str(avi)]) == 0
    assert int(cv2.VideoCapture(str(avi)).get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    assert cli_main(["predict", "--checkpoint", str(checkpoint), "--video", str(source), "--output", str(tmp_path / "o.gif")]) == 1
    assert "a video file ending in .avi, .mp4, .mkv" in capsys.readouterr().err
    assert cli_main(["predict", "--checkpoint", str(checkpoint), "--video", str(tmp_path / "missing.avi"), "--output", str(avi)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'missing.avi'}: cannot open the video") and err.count("\n") == 1


def test_a_model_failure_is_a_one_line_500_and_the_service_keeps_serving(tmp_path, caplog):
    calls = []

    def forward(batch):  # fails on the first request only
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("out of memory in conv2d")
        return np.zeros((*batch.shape[:3], 3), np.float32)

    runner = Runner("fake", Path("fake.onnx"), forward, None, 3, 3, None)
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / "a.png")
    table = ColorTable(("a", "b", "c"), np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]]))
    with TestClient(create_app(runner, table), raise_server_exceptions=False) as c:
        failed = _post(c, tmp_path / "a.png")
        assert failed.status_code == 500
        assert failed.json() == {"error": "the model failed on this image (RuntimeError: out of memory in conv2d); "
                                          "see the server's log"}
        ok = _post(c, tmp_path / "a.png")
        assert ok.status_code == 200 and np.asarray(Image.open(io.BytesIO(ok.content))).max() == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "segtrain.serve"]
    assert len(logged) == 1 and "out of memory in conv2d" in logged[0] and "\n" not in logged[0]
