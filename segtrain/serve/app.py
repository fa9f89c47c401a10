"""The HTTP service: ``POST /predict``, ``GET /health`` and ``GET /`` (the page), on FastAPI.

``POST /predict`` takes one image, either as a multipart form field ``file`` (what a browser
and ``curl -F file=@x.jpg`` send) or as the raw body with an ``image/*`` Content-Type, and
answers with a palette PNG of class indices (pixel value = class, drawn in the class
colours), ``?overlay=1`` an RGB overlay of those colours on the image, or ``?format=json``
each class's share of the pixels. Requests are decoded on the thread pool, batched with
whatever else arrived together (``batching.MicroBatcher``) and answered in the order they
finish. Everything a client can get wrong is a 4xx with ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from segtrain.data.formats.palette import ColorTable
from segtrain.io_utils import encode_png
from segtrain.serve.batching import MicroBatcher
from segtrain.serve.page import PAGE
from segtrain.serve.runners import Runner
from segtrain.serve.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES, BadUpload, decode_upload, too_large
from segtrain.visualize import as_rgb, legend_entries, overlay

FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


@dataclass(frozen=True)
class Limits:
    """What the service accepts: upload bytes, decoded pixels; how it batches."""

    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = MAX_PIXELS
    max_batch: int = 8
    max_wait: float = 0.005  # seconds a batch stays open for more requests


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_limited(stream, limit: int) -> bytes:
    """A request body or upload, refused as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _uploaded_bytes(request: Request, limits: Limits) -> bytes:
    """The image bytes of a multipart ``file`` field or of an ``image/*`` body."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_upload_bytes:
        raise too_large(int(declared), limits.max_upload_bytes)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return await _read_limited(request.stream(), limits.max_upload_bytes)
    if content_type != "multipart/form-data":
        raise BadUpload(415, f"Content-Type {content_type or '(none)'} is not accepted; send multipart/form-data with "
                             "the image in a field named 'file' (curl -F file=@image.jpg), or the image bytes with "
                             "Content-Type image/png, image/jpeg, ...")
    try:
        form = await request.form(max_files=1, max_fields=8)
    except HTTPException as err:  # starlette's multipart parser: malformed body, too many parts
        raise BadUpload(400, f"the multipart body cannot be read ({err.detail})") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadUpload(400, "the multipart form has no file field named 'file'; send the image as file=@image.jpg")
    data = await upload.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise too_large(len(data), limits.max_upload_bytes)
    return data


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "0").lower()
    if value not in FLAGS:
        raise BadUpload(400, f"?{name}={value}: use {name}=1 or {name}=0")
    return FLAGS[value]


def _shares(runner: Runner, table: ColorTable, mask: np.ndarray) -> dict:
    """Each class's share of the mask's pixels, with its name and colour (the page's legend)."""
    counts = np.bincount(mask.ravel(), minlength=runner.classes)[: runner.classes]
    return {"width": int(mask.shape[1]), "height": int(mask.shape[0]), "model": runner.source.name, "runner": runner.name,
            "classes": [{"index": i, "name": name, "color": "#{:02x}{:02x}{:02x}".format(*color), "share": float(c / mask.size)}
                        for i, ((name, color), c) in enumerate(zip(legend_entries(table, runner.classes), counts))]}


def create_app(runner: Runner, table: ColorTable, limits: Limits = Limits(), alpha: float = 0.5) -> FastAPI:
    """The service for ``runner``, its masks drawn in ``table``'s colours (overlay opacity ``alpha``)."""
    batcher = MicroBatcher(runner.masks, limits.max_batch, limits.max_wait)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="segtrain serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(BadUpload)
    async def bad_upload(_request, err: BadUpload):
        return _error(err.status, str(err))

    @app.exception_handler(HTTPException)
    async def http_error(_request, err: HTTPException):  # 404, 405: the same JSON shape as every other error
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, err: RequestValidationError):
        return _error(422, "; ".join(str(e.get("msg")) for e in err.errors()))

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": runner.source.name, "runner": runner.name, "classes": runner.classes,
                "input_size": list(runner.size) if runner.size else None, "batches": batcher.batches,
                "largest_batch": batcher.largest}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        answer = request.query_params.get("format", "png").lower()
        if answer not in ("png", "json"):
            raise BadUpload(400, f"?format={answer}: use format=png (the mask, the default) or format=json (class shares)")
        with_overlay = _flag(request, "overlay")
        image = await run_in_threadpool(decode_upload, await _uploaded_bytes(request, limits), runner.channels, limits.max_pixels)
        try:
            mask = await batcher.submit(image)
        except Exception as err:  # the model failed, not the request: one line here and in the server's log
            message = f"the model failed on this image ({type(err).__name__}: {err}); see the server's log"
            logging.getLogger("segtrain.serve").error("%s (%s)", message, runner.source)
            raise BadUpload(500, message) from None
        if answer == "json":
            return JSONResponse(_shares(runner, table, mask))
        if with_overlay:
            png = await run_in_threadpool(lambda: encode_png(overlay(as_rgb(image), table.colorize(mask), alpha)))
        else:
            png = await run_in_threadpool(encode_png, mask, palette=table.pil_palette())
        return Response(png, media_type="image/png")

    return app
