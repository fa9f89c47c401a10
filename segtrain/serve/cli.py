"""`segtrain serve`: a checkpoint or an exported model behind HTTP, with a page to try it.

    segtrain serve --checkpoint runs/x/checkpoints/best.keras [--host 127.0.0.1] [--port 8000]
    segtrain serve --model best.onnx|best.tflite --config runs/x/config.yaml

The config (``--config``, else the run ``config.yaml`` two folders above the model file, where
`segtrain train` and `segtrain export` put them) gives the class names and colours and, for a
checkpoint, ``data.resize``; an export runs at its own input size.
"""

from __future__ import annotations

import argparse
import socket

from segtrain.config import load_config
from segtrain.errors import SegtrainError
from segtrain.inference import run_config_path
from segtrain.predict import prediction_table
from segtrain.serve.runners import RUNNERS, load_runner
from segtrain.serve.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES

EXTRA_HINT = 'pip install "segtrain[serve]"'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a .keras checkpoint, or a folder written by `segtrain publish`")
    source.add_argument("--model", help=f"an exported model file ({', '.join(s for s in RUNNERS if s != '.keras')}) or a .keras file")
    parser.add_argument("--config", help="experiment YAML: class names and colours, data.resize (default: the run config.yaml two folders above the model file)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--palette", help="colour table: voc, camvid or a YAML/JSON file (default: the config's, else VOC's colour map)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port, printed)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours")
    parser.add_argument("--max-batch", type=int, default=8, help="most requests batched into one forward pass")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20, help="largest upload accepted (413 above)")
    parser.add_argument("--max-megapixels", type=float, default=MAX_PIXELS / 1e6, help="largest decoded image accepted (413 above)")


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a busy port is one error line instead of a server log."""
    try:
        sock = socket.create_server((host, port))
    except OSError as err:
        raise SegtrainError(f"--host {host} --port {port}: cannot listen there ({err.strerror}); choose another --port") from None
    return sock


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # optional dependency: the 'serve' extra

        from segtrain.serve.app import Limits, create_app  # imports fastapi (optional dependency: the 'serve' extra)
    except ImportError as err:
        raise SegtrainError(f"segtrain serve needs the optional packages of the 'serve' extra ({err.name} is missing): {EXTRA_HINT}") from None
    if args.max_batch < 1 or args.max_wait_ms < 0 or args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise SegtrainError("--max-batch must be at least 1, --max-wait-ms at least 0, --max-upload-mb and --max-megapixels above 0")
    sock = _listen(args.host, args.port)  # before the model loads: a busy port fails fast
    with sock:
        path = args.checkpoint or args.model
        config_path = args.config or run_config_path(path)  # an export written beside its checkpoint finds the run too
        config = load_config(config_path, args.overrides) if config_path else None
        runner = load_runner(path, config.data.resize if config is not None else None)
        if config is not None and runner.classes != config.data.num_classes:
            raise SegtrainError(f"{path}: model predicts {runner.classes} classes but data.num_classes is {config.data.num_classes} in {config_path}")
        table = prediction_table(args.palette, config, runner.classes)
        limits = Limits(int(args.max_upload_mb * 2**20), int(args.max_megapixels * 1e6), args.max_batch, args.max_wait_ms / 1000)
        host, port = sock.getsockname()[:2]
        print(f"serving {path} ({runner.name}, {runner.classes} classes) on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
        server = uvicorn.Server(uvicorn.Config(create_app(runner, table, limits, args.alpha), log_level="warning"))
        server.run(sockets=[sock])
    return 0
