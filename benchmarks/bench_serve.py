"""Load test of `segtrain serve` on localhost next to `segtrain predict` on the same images.

Starts `segtrain serve --checkpoint K` in its own process on a free 127.0.0.1 port, warms it
up, then ``--clients`` threads (one keep-alive connection each) post ``--requests`` images in
all, round-robin over the images, and stop. Reported: p50 / p99 latency and images/s of the
service, the error count (anything but a 200 with a PNG), the server's RSS after warm-up and
after the load (flat = no leak), its batching (forward passes, largest batch), and, in this
process, `segtrain predict`'s own per-image loop (read, predict at the training size, write the
palette PNG: ``predict_at_training_size`` as `segtrain predict` runs it) on the same images.

    python benchmarks/bench_serve.py --checkpoint runs/x/checkpoints/best.keras [--config C]
        [--images DIR | --split val] [--clients 8] [--requests 200] [--segments 4] [--name camvid_unet]

Writes benchmarks/results/serve_<name>.json and .md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from results_file import write_results  # noqa: E402  (puts the checkout on sys.path)

from segtrain.config import load_config  # noqa: E402
from segtrain.data.formats.decode import color_table, read_image  # noqa: E402
from segtrain.data.formats.images import write_prediction  # noqa: E402
from segtrain.data.formats.splits import list_samples  # noqa: E402
from segtrain.inference import load_checkpoint, predict_at_training_size, run_config_path  # noqa: E402
from segtrain.io_utils import list_images  # noqa: E402
from segtrain.precision import float32_copy  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(conn: http.client.HTTPConnection, body: bytes, content_type: str) -> tuple[int, bytes]:
    conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    return response.status, response.read()


def load(port: int, bodies: list[tuple[bytes, str]], clients: int, requests: int) -> tuple[list[float], int, float]:
    """(latencies in ms, errors, wall seconds) of ``requests`` posts by ``clients`` threads."""
    counter, lock = iter(range(requests)), threading.Lock()
    latencies, errors = [], [0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body, content_type = bodies[i % len(bodies)]
            start = time.perf_counter()
            try:
                status, data = post(conn, body, content_type)
                ok = status == 200 and data[:8] == b"\x89PNG\r\n\x1a\n"
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                latencies.append(elapsed)
                errors[0] += not ok
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0], time.perf_counter() - start


def baseline(checkpoint: str, config, images: list[Path], out: Path) -> tuple[list[float], float]:
    """`segtrain predict`'s per-image work on ``images``: (ms per image, wall seconds), model loaded beforehand."""
    model = float32_copy(load_checkpoint(checkpoint))
    table = color_table(config.data) if config is not None else None
    resize = config.data.resize if config is not None else None
    predict_at_training_size(model, read_image(images[0]), resize)  # warm-up, as the server's
    times = []
    start = time.perf_counter()
    for path in images:
        t = time.perf_counter()
        mask = predict_at_training_size(model, read_image(path, int(model.input_shape[-1])), resize)
        write_prediction(out / f"{path.stem}.png", mask, colors=table)
        times.append((time.perf_counter() - t) * 1000)
    return times, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--config", help="experiment YAML (default: the checkpoint's run config.yaml)")
    parser.add_argument("--images", help="a folder of images (default: the config's --split)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--segments", type=int, default=4, help="server RSS is read after each of this many equal parts of the load")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--name", help="results file suffix (default: the run folder's name)")
    args = parser.parse_args()
    config_path = args.config or run_config_path(args.checkpoint)
    config = load_config(config_path) if config_path else None
    if args.images:
        images = list_images(Path(args.images))
    elif config is not None:
        images = [s.image for s in list_samples(config.data, args.split)]
    else:
        sys.exit("error: --images: give a folder of images (the checkpoint has no run config to take a split from)")
    name = args.name or Path(args.checkpoint).resolve().parent.parent.name
    types = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}
    bodies = [(p.read_bytes(), types.get(p.suffix.lower(), "application/octet-stream")) for p in images]

    port = free_port()
    command = [sys.executable, "-m", "segtrain", "serve", "--checkpoint", args.checkpoint, "--port", str(port),
               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    if config_path:
        command += ["--config", str(config_path)]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = tempfile.NamedTemporaryFile("w+", prefix="bench-serve-", suffix=".log")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while "serving" not in Path(log.name).read_text():  # printed once the model is loaded and the port is bound
            if server.poll() is not None:
                sys.exit(f"error: segtrain serve did not start: {Path(log.name).read_text()}")
            time.sleep(0.5)
        _, warm_errors, _ = load(port, bodies, args.clients, 2 * args.clients)  # every batch size up to --clients seen once
        rss = [rss_mb(server.pid)]
        latencies, errors, wall = [], warm_errors, 0.0
        parts = [args.requests // args.segments + (i < args.requests % args.segments) for i in range(args.segments)]
        for part in parts:  # RSS after each segment: a leak keeps growing, a warming cache levels off
            times, failed, seconds = load(port, bodies, args.clients, part)
            latencies += times
            errors += failed
            wall += seconds
            rss.append(rss_mb(server.pid))
        rss_before, rss_after = rss[0], rss[-1]
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/health")
        health = json.loads(conn.getresponse().read())
    finally:
        server.terminate()
        server.wait(timeout=60)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        base_times, base_wall = baseline(args.checkpoint, config, images, Path(tmp))

    served = args.requests / wall
    predicted = len(images) / base_wall
    figures = {
        "checkpoint": str(args.checkpoint), "config": str(config_path), "images": len(images),
        "image_size": list(read_image(images[0]).shape[:2]), "model_input_size": health["input_size"],
        "clients": args.clients, "requests": args.requests, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
        "serve": {"p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
                  "images_per_s": served, "errors": errors, "wall_s": wall,
                  "forward_passes": health["batches"], "largest_batch": health["largest_batch"],
                  "rss_mb": rss, "rss_growth_mb": rss_after - rss_before,
                  "rss_growth_last_segment_mb": rss[-1] - rss[-2]},
        "predict": {"p50_ms": float(np.percentile(base_times, 50)), "p99_ms": float(np.percentile(base_times, 99)),
                    "images_per_s": predicted, "wall_s": base_wall},
        "ratio_images_per_s": served / predicted,
    }
    s, p = figures["serve"], figures["predict"]
    table = [
        f"`segtrain serve` ({args.clients} concurrent clients, {args.requests} requests, batches of at most {args.max_batch} "
        f"open {args.max_wait_ms:g} ms) vs `segtrain predict`'s per-image loop, on {len(images)} images of "
        f"{figures['image_size'][0]}x{figures['image_size'][1]} (model input {health['input_size']}), checkpoint {args.checkpoint}.", "",
        f"| | p50 ms | p99 ms | images/s | errors | server RSS MB: after warm-up, then after each {args.requests // args.segments} requests |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| segtrain serve | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['images_per_s']:.2f} | {s['errors']} | "
        f"{' -> '.join(f'{r:.0f}' for r in rss)} ({s['rss_growth_mb']:+.1f}) |",
        f"| segtrain predict (per image, in process) | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['images_per_s']:.2f} | | |",
        "", f"Throughput ratio serve / predict: {figures['ratio_images_per_s']:.2f}x; "
        f"{s['forward_passes']} forward passes for {args.requests + 2 * args.clients} requests (largest batch {s['largest_batch']}).",
    ]
    notes = ["Latency of the service is per request as its clients see it (queueing included, over HTTP on localhost); "
             "predict's is one image's read + predict + PNG write. The server and the load generator share this machine's cores."]
    write_results(f"serve_{name}", figures, table, notes)
    print("\n".join(table))


if __name__ == "__main__":
    main()
