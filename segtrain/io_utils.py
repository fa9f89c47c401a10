"""File and console plumbing shared by every command: atomic files, PNG/JSON, progress, sizes.

The ground floor of the house: NumPy and Pillow only (never TensorFlow), so the
TensorFlow-free commands (`convert-labels`, `evaluate --pred-dir`) and the heavy ones
write files, draw progress and read ``--size`` the same way.

Atomic writes: the content goes to a hidden temporary sibling, which is renamed over the
target with ``os.replace`` (atomic within a folder), so a reader sees the old file or the
complete new one, never half of one, even if the process is killed. ``fsync=True`` also
survives a power cut (the file and the rename are flushed to disk); it is what checkpoints
need, and costs too much for thousands of label PNGs, where a re-run repairs everything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from PIL import Image

from segtrain.errors import SegtrainError

# Every image format segtrain reads (datasets, label conversion, prediction, export checks).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
TMP_SUFFIX = ".segtrain-tmp"  # marks temporaries; a killed run's leftovers match ``.*<TMP_SUFFIX>*``
PNG_COMPRESS_LEVEL = 6  # Pillow's default

T = TypeVar("T")


# --------------------------------------------------------------------------- atomic files


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temporary_path(path: Path, suffix: str = "") -> Path:
    """The hidden sibling ``path`` is written to before the rename; ``suffix`` ends its name (Keras wants ``.keras``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}{suffix}")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries in ``folder`` whose writing process no longer exists (a killed save's litter)."""
    removed = []
    for path in Path(folder).glob(f".*{TMP_SUFFIX}*"):
        pid = _writer_pid(path.name)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def _writer_pid(name: str) -> int | None:
    """The pid inside a ``temporary_path`` name (``.<name>.<pid>.segtrain-tmp[suffix]``)."""
    head = name.split(TMP_SUFFIX, 1)[0]
    pid = head.rsplit(".", 1)[-1]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = "", *, fsync: bool = True) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it over ``path``.

    With ``fsync`` the temporary file and the folder are flushed to disk around the
    rename, so even a power cut leaves the old or the new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path, suffix)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if fsync:
        fsync_dir(path.parent)


def write_json(path: Path, data: Any, *, indent: int | None = 1, fsync: bool = True) -> None:
    """``data`` as JSON at ``path``, atomically."""
    text = json.dumps(data, indent=indent) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def write_png(
    path: Path,
    image: Image.Image | np.ndarray,
    *,
    palette: Sequence[int] | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
    fsync: bool = False,
) -> None:
    """A lossless PNG at ``path``, atomically.

    An array is (H, W) grey / indices or (H, W, 3) RGB uint8. With ``palette`` (a flat
    768-entry list, see ``palette.ColorTable.pil_palette``) an (H, W) array becomes a
    palette ('P') PNG whose pixel values are the indices themselves.
    """
    atomic_write(path, lambda tmp: tmp.write_bytes(encode_png(image, palette=palette, compress_level=compress_level)), fsync=fsync)


def encode_png(image: Image.Image | np.ndarray, *, palette: Sequence[int] | None = None,
               compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """The bytes of a lossless PNG of ``image`` (as ``write_png`` takes it): for files and HTTP responses alike."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if palette is not None:
        if image.mode not in ("L", "P"):
            raise ValueError(f"a palette PNG needs an index image, got mode {image.mode}")
        image = image.copy()
        image.putpalette(list(palette))  # 'L' -> 'P' without touching the values
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


# --------------------------------------------------------------------------- image files


def is_image_file(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` (not hidden), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p))


# --------------------------------------------------------------------------- sizes


def find_by_stem(folder: Path, stem: str) -> Path | None:
    """The image file ``<folder>/<stem>.<ext>`` for any image extension (either case), or None."""
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def describe_findings(findings: Sequence[tuple[str, Iterable[str], str]], limit: int = 20, files_named: int = 3) -> str:
    """One message line for many findings: ``'<what> in a, b, c (+k more files)<after>; ...; and N more'``.

    ``findings`` are (what, the files it was found in, text after the files), in the order to
    report; the first ``limit`` are named, each with its first ``files_named`` files (sorted).
    """
    parts = []
    for what, files, after in findings[:limit]:
        files = sorted(files)
        more = f" (+{len(files) - files_named} more files)" if len(files) > files_named else ""
        parts.append(f"{what} in {', '.join(files[:files_named])}{more}{after}")
    if len(findings) > limit:
        parts.append(f"and {len(findings) - limit} more")
    return "; ".join(parts)


def per_axis(value: int | Sequence[int], rank: int, what: str) -> tuple[int, ...]:
    """One int for every spatial axis, or exactly one per axis: kernel sizes, factors, windows."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * rank
    value = tuple(int(v) for v in value)
    if len(value) != rank:
        raise ValueError(f"{what}={value} has {len(value)} entries but the input has {rank} spatial axes")
    return value


def parse_size(text: str, flag: str = "--size", rank: int | None = 2) -> tuple[int, ...]:
    """'512' or 'HxW' (height first, everywhere in segtrain) -> positive ints.

    A single number is the same size on every one of ``rank`` axes; ``rank=None`` accepts
    any number of axes (``DxHxW`` for volumes) and returns what was given.
    """
    try:
        parts = tuple(int(p) for p in str(text).lower().replace(",", "x").split("x"))
    except ValueError:
        parts = ()
    if rank is not None and len(parts) == 1:
        parts = parts * rank
    if not parts or min(parts) < 1 or (rank is not None and len(parts) != rank):
        if rank == 2:
            wanted = "a positive size N or HxW (height x width), e.g. 512 or 360x480"
        elif rank is None:
            wanted = "positive sizes, height first, e.g. 360x480"
        else:
            wanted = f"a positive size N or {rank} sizes joined by x, e.g. {'x'.join(['64'] * rank)}"
        raise SegtrainError(f"{flag} {text!r}: expected {wanted}")
    return parts


def format_size(size: Sequence[int]) -> str:
    """(360, 480) -> '360x480', the way ``parse_size`` reads it back."""
    return "x".join(str(int(s)) for s in size)


# --------------------------------------------------------------------------- progress


class Progress:
    """One progress display for every long loop: a redrawn bar on a terminal, plain lines elsewhere.

    On a terminal the bar is redrawn in place (carriage return) at most 10 times a second.
    When the stream is a file or a pipe (logs, CI), no carriage returns or escape codes are
    written: one plain line per 10 % of the work, so a log stays small and readable. By
    default the bar goes to stderr on a terminal and the plain lines to stdout, so that
    stderr off a terminal holds nothing but warnings and the one ``error:`` line.
    """

    def __init__(self, total: int, label: str, *, unit: str = "it", enabled: bool = True, stream: IO[str] | None = None,
                 refresh_s: float = 0.1):
        self.total, self.label, self.unit, self.enabled = int(total), label, unit, enabled
        self.refresh_s, self.info, self._width = refresh_s, "", 0
        if stream is None:
            stream = sys.stderr if sys.stderr.isatty() else sys.stdout
        self.stream = stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done, self.start, self._drawn = 0, time.perf_counter(), float("-inf")
        self._tenths = 0

    def update(self, n: int = 1, info: str = "") -> None:
        """Count ``n`` more items; ``info`` (e.g. a running loss) is shown after the counts."""
        self.update_to(self.done + n, info)

    def update_to(self, done: int, info: str = "") -> None:
        """Set the count (a resumed loop starts past zero)."""
        self.done, self.info = done, info
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = self.done >= self.total
        if self.tty:
            if now - self._drawn >= self.refresh_s or finished:
                self._drawn = now
                line = self._line(now)
                self.stream.write("\r" + line.ljust(self._width))
                self._width = len(line)
                self.stream.flush()
        else:
            tenths = 10 * self.done // max(self.total, 1)
            if tenths > self._tenths or (finished and self._tenths < 10):
                self._tenths = 10 if finished else tenths
                self.stream.write(self._line(now) + "\n")
                self.stream.flush()

    def _line(self, now: float) -> str:
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        counts = f"{self.done}/{self.total} {rate:.1f} {self.unit}/s"
        info = f"  {self.info}" if self.info else ""
        if not self.tty:
            return f"{self.label} {counts}{info}"
        filled = 30 * min(self.done, self.total) // max(self.total, 1)
        return f"{self.label} [{'#' * filled}{'.' * (30 - filled)}] {counts} eta {eta:.0f}s{info}"

    def close(self) -> None:
        if self.enabled and self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(items: Sequence[T] | Iterable[T], label: str, *, enabled: bool = True, unit: str = "img",
             total: int | None = None, stream: IO[str] | None = None) -> Iterator[T]:
    """Yield ``items`` while a ``Progress`` counts them."""
    total = len(items) if total is None else total  # type: ignore[arg-type]
    with Progress(total, label, unit=unit, enabled=enabled, stream=stream) as bar:
        for item in items:
            yield item
            bar.update()


def read_ahead(read: Callable[[T], Any], items: Iterable[T], depth: int = 4) -> Iterator[Any]:
    """``read(item)`` of each item in order, up to ``depth`` items read ahead on one thread, so that
    decoding the next files overlaps the model's forward pass (Pillow and NumPy release the GIL)."""
    items = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="segtrain-read-ahead") as pool:
        pending: list[Future] = [pool.submit(read, item) for item in itertools.islice(items, depth)]
        try:
            while pending:
                result = pending.pop(0).result()  # re-raises the reader's SegtrainError as is
                pending.extend(pool.submit(read, item) for item in itertools.islice(items, 1))
                yield result
        finally:  # the consumer stopped early or failed: no reading left running
            for future in pending:
                future.cancel()


def file_stamps(record: Any) -> tuple:
    """(path, modification time, size) of every file a dataclass record (a sample, a case) names:
    caches of decoded files key on it, so a file rewritten in the same process (a notebook that
    fixes a label and trains again) is decoded again, not served stale."""
    stamps = []
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        for path in value if isinstance(value, tuple) else (value,):
            if isinstance(path, Path):
                try:
                    stat = os.stat(path)
                    stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
                except OSError:
                    stamps.append((str(path), None, None))  # reading it raises its one-line error
    return tuple(stamps)


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode a file; corrupt, truncated or oversized files become ``SegtrainError``."""
    try:
        im = Image.open(path)  # reads the header only; Pillow itself refuses over 2x the limit
        limit = Image.MAX_IMAGE_PIXELS
        if limit and im.width * im.height > limit:  # refuse before decoding, not after
            raise Image.DecompressionBombError(f"{im.width}x{im.height} pixels")
        im.load()
        return im
    except FileNotFoundError:
        raise SegtrainError(f"{path}: file not found") from None
    except Image.DecompressionBombError as err:
        raise SegtrainError(
            f"{path}: refused as a possible decompression bomb ({err}); "
            f"raise PIL.Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS}) if the file is genuine"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise SegtrainError(f"{path}: cannot decode image ({' '.join(str(err).split())}); the file is corrupt or truncated") from None


def make_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``mkdir -p`` for a folder segtrain writes into; a file in the way or no permission is one clear error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SegtrainError(f"{path}: the {what} is (or is inside) an existing file; choose a folder path") from None
    except PermissionError:
        raise SegtrainError(f"{path}: no permission to create the {what}; choose a writable location") from None
    except OSError as err:  # a read-only file system (EROFS), a full disk, ...
        raise SegtrainError(f"{path}: cannot create the {what} ({err.strerror or err}); choose a writable location") from None
    if not os.access(path, os.W_OK):
        raise SegtrainError(f"{path}: the {what} is not writable; choose a writable location")
    return path
