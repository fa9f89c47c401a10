"""The table of export formats: each format says how to write a model and how to run the result.

``segtrain export --format`` offers exactly the formats in ``EXPORT_FORMATS``, and the
parity check runs an export in the runtimes its format names, so a new format is one
module that calls ``register_export_format`` (docs/extending_export.md). This module
imports no optional dependency: each format imports its converter and runtimes inside
its own functions.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segtrain.errors import SegtrainError


@dataclasses.dataclass
class Runners:
    """An export loaded in its runtimes, as the parity check needs it.

    ``input_shape`` is the input as exported (its own layout; ``None`` or a non-positive
    number for a dynamic axis); ``run`` maps a runtime's name to ``x -> logits`` in that layout.
    """

    input_shape: Sequence[int | None]
    run: dict[str, Callable[[np.ndarray], np.ndarray]]


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One row of the table.

    ``write(model, shape, nchw, output, **options)`` writes ``model`` to ``output`` for an
    input of channels-last ``shape`` (batch first, ``None`` = dynamic), channels-first when
    ``nchw``. ``runners(path)`` loads a written export in every runtime a deployer is likely
    to use. ``options`` are the extra keyword arguments ``write`` takes, with their defaults;
    ``export_model`` refuses any other. The default output is ``<checkpoint stem>[-nchw][-<quantize>]<suffix>``.
    """

    name: str
    suffix: str
    write: Callable[..., None]
    runners: Callable[[Path], Runners]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def default_output(self, checkpoint: str | os.PathLike, nchw: bool = False, quantize: str = "none") -> Path:
        """``best.keras`` -> ``best<suffix>``; ``best-nchw-int8<suffix>`` for a channels-first int8 export."""
        checkpoint = Path(checkpoint)
        tags = ("-nchw" if nchw else "") + ("" if quantize == "none" else f"-{quantize}")
        return checkpoint.with_name(checkpoint.stem + tags + self.suffix)


EXPORT_FORMATS: dict[str, ExportFormat] = {}  # name -> format, in the order --format lists them


def register_export_format(fmt: ExportFormat) -> ExportFormat:
    """Add ``fmt`` to the table (a name can be registered once: unregister it first to replace it)."""
    if fmt.name in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt.name!r} is already registered")
    EXPORT_FORMATS[fmt.name] = fmt
    return fmt


def unregister_export_format(name: str) -> None:
    """Remove a format from the table (a test's or plugin's own format, when it is done)."""
    del EXPORT_FORMATS[name]


def export_format(name: str) -> ExportFormat:
    """The format called ``name``; an unknown name is the user's ``--format`` mistake."""
    try:
        return EXPORT_FORMATS[name]
    except KeyError:
        raise SegtrainError(f"--format {name!r}: use one of {', '.join(EXPORT_FORMATS)}") from None
