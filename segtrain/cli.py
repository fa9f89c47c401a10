"""`segtrain <command>`: one sub-command per module, each exposing ``add_arguments`` and ``run``.

User mistakes (``SegtrainError``, and argparse's usage errors of every command) print as one
line and exit 1; anything else is a bug and keeps its traceback. TensorFlow's start-up chatter (oneDNN and CUDA notices, ``failed
call to cuInit`` on machines without a GPU) is silenced: a user cannot act on it, and it
buried the one error line. ``TF_CPP_MIN_LOG_LEVEL=0`` in the environment brings back
TensorFlow's runtime log.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import os
import re
import sys
import tempfile

from segtrain.backend import check_backend_installed, requested_backend
from segtrain.errors import SegtrainError

# command -> (module, one-line help). Modules are imported only when their command runs,
# so `segtrain convert-labels` does not pay for importing TensorFlow.
COMMANDS = {
    "train": ("segtrain.training", "train a model from a YAML config"),
    "check-dataset": ("segtrain.data.check", "scan a dataset split and report every bad file"),
    "evaluate": ("segtrain.evaluation", "mIoU, per-class IoU and confusion matrix of a checkpoint or a folder of predictions"),
    "predict": ("segtrain.predict", "write palette-PNG predictions of a checkpoint for images"),
    "convert-labels": ("segtrain.tools.convert_labels", "convert label PNGs between RGB colour, palette and raw index forms; import labelme, COCO and CVAT annotations"),
    "export": ("segtrain.export.cli", "export a checkpoint to SavedModel or ONNX and check parity"),
    "checkerboard": ("segtrain.models.checkerboard", "score decoders' upsampling for checkerboard artifacts"),
    "publish": ("segtrain.tools.publish", "a run as a folder others load with one command (weights, config, classes, "
                "val report, model card); optionally pushed to the Hugging Face Hub"),
    "split-sequences": ("segtrain.tools.split_sequences", "count the video sequences of list files; hold whole sequences out as a validation split"),
    "serve": ("segtrain.serve.cli", "serve a checkpoint or an ONNX / TFLite export over HTTP, with a page to try it"),
}

# Commands that load Keras and its backend (some only inside ``run``): the backend is checked and,
# when it is TensorFlow, loaded up front, quietly.
USES_KERAS = {"train", "evaluate", "predict", "export", "checkerboard", "publish", "serve"}


# argparse's messages that name a wrong word, and where the right words are: the choices it lists,
# or the options of the parser that failed.
_INVALID_CHOICE = re.compile(r"invalid choice: '?(?P<word>[^' ]+)'? \(choose from (?P<choices>.*)\)")
_UNKNOWN_OPTION = re.compile(r"unrecognized arguments: (?P<word>-\S+)")


class OneLineParser(argparse.ArgumentParser):
    """argparse's usage errors as a ``SegtrainError`` (one ``error:`` line, exit 1), with "did you mean"
    where a close choice or option exists; sub-command parsers inherit it."""

    def error(self, message: str):
        raise SegtrainError(f"{self.prog}: {message}; {self._suggestion(message) or f'see {self.prog} --help'}")

    def _suggestion(self, message: str) -> str | None:
        choice, option = _INVALID_CHOICE.search(message), _UNKNOWN_OPTION.search(message)
        if choice:
            word, known = choice["word"], re.findall(r"'?([^', ]+)'?", choice["choices"])
        elif option:
            word, known = option["word"].split("=")[0], self._all_options()
        else:
            return None
        close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
        return f"did you mean {close[0]}?" if close else None

    def _all_options(self) -> list[str]:
        """Options of this parser and its sub-commands' (the top parser reports a sub-command's unknown options)."""
        subs = [p for a in self._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]
        return [option for parser in (self, *subs) for option in parser._option_string_actions]


@contextlib.contextmanager
def _native_startup_quiet():
    """Send what native libraries print to fd 2 while they load to a file; replay it if loading fails.

    TensorFlow's C++ start-up lines are written before its log level is read (absl prints
    everything until it is initialised), so only a redirect of the file descriptor hides them.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read by TensorFlow when it loads
    parser = OneLineParser(prog="segtrain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            if name in USES_KERAS:
                try:
                    check_backend_installed()
                except SegtrainError as err:
                    print(f"error: {err}", file=sys.stderr)
                    return 1
            with _native_startup_quiet():
                if name in USES_KERAS and requested_backend() == "tensorflow":
                    with contextlib.suppress(ImportError):  # the command says so itself if it needs it
                        tf = importlib.import_module("tensorflow")
                        tf.config.list_physical_devices("GPU")  # CUDA's probe prints 'failed call to cuInit' here
                modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(cmd)
    try:
        args = parser.parse_args(argv)
        args.argv = argv[1:]  # the command's own arguments, for a command that runs itself again (export)
        return int(modules[args.command].run(args) or 0)
    except SegtrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
