"""Outputs never overwrite inputs: one check for every file or folder a user names as an output.

Every command that writes a user-named output (predict's --csv, --overlay, --sr and --sc, report's --out,
bench's --json and --plot) calls ``check_output`` (or one ``OutputChecker`` for many files)
BEFORE any work, and gets a ConfigError with a one-line message naming the path and the problem
when the output:

1. has an ancestor that exists and is not a folder (nothing could be written there);
2. is, or is inside, an mxa-edge artifact or training run folder (``formats.naming``), checked
   on the path as written and on its real location (symlinks resolved). Artifacts are never
   written into; a run only receives bench's own results beside it (RUN/bench.json,
   RUN/bench.png: ``OutputKind.run_name``);
3. is the same file as one of the command's inputs (``os.stat`` identity: hard links and
   symlinks included);
4. exists and is not a previous output of the same kind, recognized by content (the CSV
   header predict writes, the report's generator tag, bench's JSON keys, the ``Software``
   text chunk of the PNGs written here), unless ``force``. ``force`` never lifts 1-3.

Standard library and Pillow only: this module is on the light runtime path (predict has no torch).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from mxa_edge.formats import naming
from mxa_edge.support.errors import ConfigError

FORCE_HELP = (
    "Overwrite an existing file that is not a previous output of this command. Never allows writing inside an "
    "artifact or training run, or over one of the command's inputs."
)

# Content markers of what this toolkit writes (recognized by ``OutputKind.recognize``).
CSV_HEADER = "file,status,message"  # predict --csv: the first line starts with it
REPORT_META = '<meta name="generator" content="mxa-edge report">'  # report HTML, in the head
BENCH_JSON_KEYS = frozenset({"settings", "machine", "compute_bound", "rows"})  # bench --json
BENCH_PNG_SOFTWARE = "mxa-edge bench"  # bench --plot: PNG tEXt chunk "Software"
OVERLAY_PNG_SOFTWARE = "mxa-edge predict"  # predict --overlay: PNG tEXt chunk "Software"
PNG_SOFTWARE_KEY = "Software"

_MAX_JSON_BYTES = 64 * 2**20  # a bench JSON is kilobytes: a larger file is not one


def png_software(path) -> str | None:
    """The ``Software`` text chunk of a PNG file, or None (not a PNG, no such chunk, unreadable).
    Pillow reads the chunks before the image data when it opens the file; no pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.info.get(PNG_SOFTWARE_KEY) if im.format == "PNG" else None
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _first_bytes(path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _is_predict_csv(path) -> bool:
    return _first_bytes(path, len(CSV_HEADER)).decode("utf-8", "replace") == CSV_HEADER


def _is_report_html(path) -> bool:
    return REPORT_META.encode() in _first_bytes(path, 4096)


def _is_bench_json(path) -> bool:
    try:
        if os.path.getsize(path) > _MAX_JSON_BYTES:
            return False
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and BENCH_JSON_KEYS <= data.keys()


@dataclass(frozen=True)
class OutputKind:
    """One kind of user-named output: how messages name it and how a previous one is recognized."""

    what: str  # in messages: "predict CSV"
    option: str  # the option that names it
    recognize: Callable[[Path], bool] | None = None  # a previous output of this kind, by content
    folder: bool = False  # a folder of outputs (its files are checked one by one)
    run_name: str | None = None  # the one name it may take directly inside a training run folder


KINDS = {
    "csv": OutputKind("predict CSV", "--csv", _is_predict_csv),
    "overlay": OutputKind("predict overlay PNG", "--overlay", lambda p: png_software(p) == OVERLAY_PNG_SOFTWARE),
    "overlay-dir": OutputKind("overlay folder", "--overlay", folder=True),
    "sr-dir": OutputKind("DICOM SR folder", "--sr", folder=True),
    "sc-dir": OutputKind("DICOM secondary capture folder", "--sc", folder=True),
    "fhir-dir": OutputKind("FHIR bundle folder", "--fhir", folder=True),
    "html": OutputKind("report HTML", "--out", _is_report_html),
    "bench-json": OutputKind("bench JSON", "--json", _is_bench_json, run_name=naming.BENCH_JSON),
    "bench-plot": OutputKind(
        "bench plot", "--plot", lambda p: png_software(p) == BENCH_PNG_SOFTWARE, run_name=naming.BENCH_PLOT
    ),
}


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


class OutputChecker:
    """The checks of one command: its inputs and --force, applied to each output it names.

    One checker serves many outputs (an overlay per image): the inputs are stat'ed once and each
    folder's artifact/run verdict is remembered."""

    def __init__(self, inputs: Iterable = (), *, force: bool = False):
        self.force = force
        self._inputs = {}
        for p in inputs:
            key = _identity(p)
            if key is not None:
                self._inputs.setdefault(key, Path(p))
        self._owners: dict[Path, str | None] = {}

    def _owner(self, folder: Path) -> str | None:
        """The manifest format of ``folder`` when it is an artifact or a run, else None."""
        if folder not in self._owners:
            fmt = naming.manifest_format(folder)
            self._owners[folder] = fmt if fmt in (naming.ARTIFACT_FORMAT, naming.RUN_FORMAT) else None
        return self._owners[folder]

    def check(self, path, kind: str) -> Path:
        """ConfigError unless ``path`` may be written as an output of ``kind`` (a key of KINDS)."""
        k = KINDS[kind]
        path = Path(path)
        literal = Path(os.path.abspath(path))
        real = Path(os.path.realpath(path))
        for chain in (literal, real):
            self._check_parents(path, chain)
        for chain in dict.fromkeys((literal, real)):
            self._check_owner(path, chain, k)
        key = _identity(path)
        if key is not None and key in self._inputs:
            raise ConfigError(
                f"{path}: is an input of this command ({self._inputs[key]}); outputs never overwrite inputs: "
                f"choose another {k.option}"
            )
        if os.path.lexists(path):
            self._check_existing(path, k)
        return path

    @staticmethod
    def _check_parents(path: Path, chain: Path) -> None:
        for parent in reversed(chain.parents):
            if parent.exists() and not parent.is_dir():
                raise ConfigError(f"{path}: {parent} is a file, not a folder")

    def _check_owner(self, path: Path, chain: Path, k: OutputKind) -> None:
        candidates = ([chain] if chain.is_dir() else []) + list(chain.parents)
        for folder in candidates:
            fmt = self._owner(folder)
            if fmt is None:
                continue
            what = "artifact" if fmt == naming.ARTIFACT_FORMAT else "training run"
            if folder == chain:
                raise ConfigError(
                    f"{path}: is an mxa-edge {what} folder; nothing is written over it: choose another {k.option}"
                )
            if fmt == naming.RUN_FORMAT and k.run_name is not None and chain == folder / k.run_name:
                return  # bench's own results beside the run it measured
            article = "an" if fmt == naming.ARTIFACT_FORMAT else "a"
            raise ConfigError(
                f"{path}: is inside the mxa-edge {what} {folder}; nothing is written into {article} {what} "
                f"folder: choose a {k.option} path outside it"
            )

    def _check_existing(self, path: Path, k: OutputKind) -> None:
        if k.folder:
            if not path.is_dir():
                raise ConfigError(f"{path}: is a file, not a folder; {k.option} takes a folder")
            return
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder; {k.option} takes a file name")
        if self.force or (k.recognize is not None and k.recognize(path)):
            return
        raise ConfigError(
            f"{path}: exists and is not a {k.what} written by mxa-edge; refusing to overwrite it: "
            f"choose another {k.option} or pass --force"
        )


def check_output(path, kind: str, *, inputs: Iterable = (), force: bool = False) -> Path:
    """ConfigError (one line, naming ``path``) unless ``path`` may be written as an output of
    ``kind`` (a key of ``KINDS``) by a command reading ``inputs``; see the module docstring."""
    return OutputChecker(inputs, force=force).check(path, kind)
