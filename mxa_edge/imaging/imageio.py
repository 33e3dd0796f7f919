"""Read one radiograph file into a gray float image, the way a radiologist views it.

``load_radiograph`` accepts PNG (8- and 16-bit; gray, RGB, RGBA, palette, gray+alpha), JPEG
(EXIF orientation applied) and single-frame DICOM, and always returns a float32 array of shape
(H, W) in [0, 1] where higher means brighter (bone white, air black). Everything downstream
(``mxa_edge.imaging.preprocess``, training, predict) starts from that array.

Every problem with a file's content raises ``InputImageError(path, problem)`` with a one-line
message that says what is wrong and, where possible, how to fix it; Pillow's and pydicom's own
exceptions never escape. Only numpy, Pillow and pydicom here: this is on the light runtime path.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np

from mxa_edge.support.errors import InputImageError

# Refuse images above this many pixels before their pixel data is decoded. A chest radiograph
# is at most ~4300 x 4300 (18 MP); 80 MP leaves room for odd scanners while stopping a crafted
# file whose header claims gigapixels from exhausting memory.
MAX_PIXELS = 80_000_000

SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")

# Pillow formats we read; anything else Pillow can open (BMP, GIF, TIFF...) is refused so the
# set of inputs matches SUPPORTED_SUFFIXES. MPO is how Pillow names multi-picture JPEGs.
_PIL_FORMATS = frozenset({"PNG", "JPEG", "MPO"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I"})
_DICOM_MAGIC_OFFSET = 128
_FIX_CONVERT = "convert it to an 8- or 16-bit grayscale PNG"


def is_supported_image(path) -> bool:
    """True when the file name has a suffix load_radiograph reads (the content is not checked)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


def load_radiograph(path, frame: int | None = None) -> np.ndarray:
    """Read a PNG, JPEG or DICOM radiograph as float32 (H, W) in [0, 1], bone white.

    ``frame``: for a multi-frame DICOM, the frame to read (0-based); without it a multi-frame
    file is refused. Raises InputImageError for a missing, empty, truncated, oversized, constant
    or otherwise unusable file, and for a FIFO, socket, device or directory (never opened).

    Memory, per pixel: the float32 result is 4 bytes. Decoding a PNG or JPEG peaks at about 6
    (16-bit: Pillow's pixels, 2, and numpy's copy, 2, then that copy and the float32 result,
    after Pillow's are freed). DICOM needs more, as pydicom applies the rescale and window in
    float64: about 12 bytes without them, up to about 28 with a rescale and a window.
    """
    path = Path(path)
    head = _read_head(path)
    if _looks_like_dicom(path, head):
        gray = _load_dicom(path, has_preamble=head[_DICOM_MAGIC_OFFSET:] == b"DICM", frame=frame)
    else:
        gray = _load_pillow(path, head)
    return _checked(path, gray)


# --- common ----------------------------------------------------------------------------------


def irregular_file_problem(path) -> str | None:
    """The problem with a path that exists but is not a regular file (a FIFO, socket, device or
    directory), found without opening it (opening a FIFO blocks until something writes to it);
    None for a regular file, a symlink to one, or a path that cannot be stat'ed (reading it
    then reports why)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file ({_file_kind(mode)}); give the image file itself"


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "an unknown kind of file"


def _read_head(path: Path) -> bytes:
    """First 132 bytes (enough for the DICOM magic); also turns OS errors into InputImageError."""
    try:
        problem = irregular_file_problem(path)
        if problem is not None:
            raise InputImageError(path, problem)
        size = path.stat().st_size
        if size == 0:
            raise InputImageError(path, "file is empty (0 bytes); re-copy or re-export it")
        with path.open("rb") as f:
            return f.read(_DICOM_MAGIC_OFFSET + 4)
    except FileNotFoundError:
        raise InputImageError(path, "file not found; check the path") from None
    except PermissionError:
        raise InputImageError(path, "permission denied; check the file's read permissions") from None
    except OSError as exc:
        raise InputImageError(path, f"cannot read the file ({exc.strerror or exc})") from None


def _looks_like_dicom(path: Path, head: bytes) -> bool:
    has_magic = head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM"
    return has_magic or path.suffix.lower() in (".dcm", ".dicom")


def _check_pixel_count(path: Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise InputImageError(
            path,
            f"image is {width}x{height} ({width * height:,} pixels), over the {MAX_PIXELS:,}-pixel limit "
            "(a possible decompression bomb); downscale it before use",
        )


def _checked(path: Path, gray: np.ndarray) -> np.ndarray:
    """Final contract check: 2-D, finite, not constant; returned as float32 in [0, 1].

    ``gray`` is an array this module made: it is converted and clipped in place where it can be."""
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise InputImageError(path, f"decoded to shape {gray.shape}, not a 2-D image")
    if not np.isfinite(gray).all():
        raise InputImageError(path, "decoded pixel values include NaN or infinity; the file is corrupt")
    lo, hi = float(gray.min()), float(gray.max())
    if lo == hi:
        raise InputImageError(path, f"all pixels have the same value ({lo:g}): the image is blank; check the export")
    out = gray.astype(np.float32, copy=False)
    return np.clip(out, 0.0, 1.0, out=out if out.flags.writeable else None)


# --- PNG / JPEG (Pillow) ---------------------------------------------------------------------


def _load_pillow(path: Path, head: bytes) -> np.ndarray:
    from PIL import ImageOps

    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
        # PNG's first chunk is IHDR: check its size here so even headers past Pillow's own
        # bomb limit get the same message with the dimensions.
        _check_pixel_count(path, *struct.unpack(">II", head[16:24]))
    sbit = _png_significant_bits(path) if head.startswith(_PNG_SIGNATURE) else None
    with _open_pillow(path) as im:  # the with closes the file handle Pillow keeps open
        try:
            # Decode here so a truncated file fails inside this try; then apply the EXIF
            # orientation (a no-op without EXIF or with orientation 1), in place: no copy.
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
        except Exception as exc:  # Pillow raises OSError, SyntaxError, zlib/struct errors... on bad data
            raise InputImageError(
                path, f"cannot decode the pixel data ({_short(exc)}); the file is truncated or corrupt"
            ) from None
        if im.mode not in _SIXTEEN_BIT_MODES:
            return _pillow_to_gray(path, im)
        raw = np.asarray(im)  # a copy of Pillow's pixels...
        im.close()  # ...so Pillow's own are freed before the float conversion
    return _sixteen_bit_to_unit(path, raw, sbit)


def _open_pillow(path: Path):
    """Open lazily (header only) and refuse unsupported formats and oversized images."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow warns between its own limit and twice it; we refuse those below anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise InputImageError(
            path, f"image is too large to decode safely ({_short(exc)}); downscale it before use"
        ) from None
    except UnidentifiedImageError:
        raise InputImageError(path, f"not a readable image (expected PNG, JPEG or DICOM); {_FIX_CONVERT}") from None
    except Exception as exc:  # a broken header can raise anything from Pillow's parsers
        raise InputImageError(path, f"cannot read the image header ({_short(exc)}); the file is corrupt") from None
    try:
        if im.format not in _PIL_FORMATS:
            raise InputImageError(path, f"unsupported format {im.format}; {_FIX_CONVERT}")
        _check_pixel_count(path, *im.size)
    except InputImageError:
        im.close()
        raise
    return im


def _pillow_to_gray(path: Path, im) -> np.ndarray:
    """Pillow image of any supported mode but the 16-bit ones (``_sixteen_bit_to_unit``) -> float gray in [0, 1]."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode == "L":
        return _bytes_to_unit(np.asarray(im))
    if mode in ("LA", "RGB", "RGBA", "P", "PA", "CMYK", "YCbCr"):
        # Alpha is dropped (a radiograph has no transparency); colour -> ITU-R 601 luma.
        rgb = im.convert("RGBA").convert("RGB") if mode in ("P", "PA") else im
        gray = rgb.convert("L") if rgb.mode != "LA" else rgb.getchannel("L")
        return _bytes_to_unit(np.asarray(gray))
    raise InputImageError(path, f"unsupported pixel mode {mode!r}; {_FIX_CONVERT}")


def _bytes_to_unit(arr: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 / 255, divided in place (one float32 array, no temporary)."""
    unit = arr.astype(np.float32)
    unit /= np.float32(255.0)
    return unit


def _sixteen_bit_to_unit(path: Path, arr: np.ndarray, sbit: int | None) -> np.ndarray:
    # 16-bit gray PNG: divide by 2**bits - 1, where bits is the PNG sBIT chunk's significant-bit
    # count (medical exporters write 12-bit data unscaled into 16-bit PNGs and mark it with
    # sBIT=12), else 16 (65535). The PNG spec also allows encoders to scale sBIT data to the full
    # 16-bit range; a value above 2**bits - 1 proves the file did that, so 65535 is used then.
    # In float32, divided in place: integers up to 65535 are exact in float32, and a correctly
    # rounded float32 quotient equals the float64 quotient rounded to float32.
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 65535:
        raise InputImageError(path, f"pixel values outside 16 bits ({lo:g}..{hi:g}); {_FIX_CONVERT}")
    full = 65535.0
    if sbit is not None and hi <= 2**sbit - 1:
        full = float(2**sbit - 1)
    unit = arr.astype(np.float32)
    unit /= np.float32(full)
    return unit


def _png_significant_bits(path: Path) -> int | None:
    """The PNG sBIT chunk's gray (or first channel) bit count, or None.

    Pillow (13.0) does not expose sBIT when reading, so the chunks before the first IDAT are
    walked here; only their headers are read, never the pixel data.
    """
    try:
        with path.open("rb") as f:
            f.seek(len(_PNG_SIGNATURE))
            while True:
                header = f.read(8)
                if len(header) < 8:
                    return None
                length, ctype = struct.unpack(">I4s", header)
                if ctype in (b"IDAT", b"IEND"):
                    return None
                if ctype == b"sBIT":
                    data = f.read(length)
                    bits = data[0] if data else 0
                    return bits if 1 <= bits <= 16 else None
                f.seek(length + 4, 1)  # skip the chunk's data and CRC
    except (OSError, struct.error):
        return None


# --- DICOM (pydicom) -------------------------------------------------------------------------


def _load_dicom(path: Path, has_preamble: bool, frame: int | None = None) -> np.ndarray:
    ds = _read_dicom(path, force=not has_preamble)
    _check_dicom_header(path, ds, has_preamble, frame)
    arr = _decode_dicom_pixels(path, ds, frame)
    if float(arr.min()) == float(arr.max()):
        raise InputImageError(path, f"all pixels have the same value ({float(arr.min()):g}): the image is blank")
    return _dicom_to_display(path, ds, arr)


def _read_dicom(path: Path, force: bool):
    import pydicom

    try:
        # force=True only for a .dcm/.dicom name without the 128-byte preamble (older files);
        # on other content it parses garbage, which _check_dicom_header then refuses.
        return pydicom.dcmread(path, force=force)
    except Exception as exc:  # InvalidDicomError, EOFError, struct/encoding errors on bad files
        raise InputImageError(path, f"unreadable DICOM ({_short(exc)}); the file is truncated or not DICOM") from None


def _check_dicom_header(path: Path, ds, has_preamble: bool, frame: int | None = None) -> None:
    """Everything knowable before the pixels are decoded: presence, frame count, size."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if not has_preamble:
            raise InputImageError(path, "not a readable DICOM image (no 'DICM' preamble and no pixel data)")
        raise InputImageError(
            path, "DICOM has no pixel data: the file is truncated, or a report/structured document, not an image"
        )
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputImageError(path, f"DICOM image header is incomplete ({_short(exc)})") from None
    if frames > 1 and frame is None:
        raise InputImageError(
            path, f"multi-frame DICOM ({frames} frames): say which frame to read, or export the single radiograph frame"
        )
    if frame is not None and not 0 <= frame < frames:
        raise InputImageError(path, f"frame {frame} asked for, but the DICOM has {frames} frame(s)")
    _check_pixel_count(path, cols, rows)


def _decode_dicom_pixels(path: Path, ds, frame: int | None = None) -> np.ndarray:
    try:
        if frame is None:
            arr = ds.pixel_array
        else:  # decode only the frame asked for
            from pydicom.pixels import pixel_array

            arr = pixel_array(ds, index=frame)
    except Exception as exc:  # missing decoder plugin, truncated pixel data, bad transfer syntax
        raise InputImageError(path, _pixel_decode_problem(ds, exc)) from None
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        # Colour secondary captures (pydicom returns RGB): ITU-R 601 luma, like Pillow's "L".
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if arr.ndim != 2:
        raise InputImageError(path, f"DICOM pixel data has shape {arr.shape}, not a single 2-D image")
    return arr


def _pixel_decode_problem(ds, exc: Exception) -> str:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and getattr(ts, "is_compressed", False):
        return (
            f"DICOM pixel data is compressed ({ts.name}) and could not be decoded ({_short(exc)}); "
            f"install its decoder ({_decoder_hint(ts)}) "
            "or convert the file to uncompressed DICOM (gdcmconv --raw)"
        )
    return f"cannot decode the DICOM pixel data ({_short(exc)}); the file is truncated or corrupt"


# Which optional package decodes which compressed transfer syntax (pydicom's pixel handlers).
# pylibjpeg-libjpeg is GPL-3.0: python-gdcm (BSD) is the alternative where that matters.
_DECODERS = {
    "JPEG Lossless": "pip install 'mxa-edge[dicom]' (pylibjpeg + pylibjpeg-libjpeg), or pip install python-gdcm",
    "JPEG Baseline": "pip install 'mxa-edge[dicom]' (pylibjpeg + pylibjpeg-libjpeg), or Pillow's JPEG plugin",
    "JPEG Extended": "pip install 'mxa-edge[dicom]' (pylibjpeg + pylibjpeg-libjpeg), or pip install python-gdcm",
    "JPEG-LS": "pip install pyjpegls, or pip install python-gdcm",
    "JPEG 2000": "pip install 'mxa-edge[dicom]' (pylibjpeg + pylibjpeg-openjpeg), or pip install python-gdcm",
    "RLE": "numpy alone decodes RLE Lossless: the data is corrupt, or pip install pylibjpeg-rle",
}


def _decoder_hint(ts) -> str:
    name = str(getattr(ts, "name", "") or ts)
    for key, hint in _DECODERS.items():
        if name.startswith(key) or key in name:
            return hint
    return "no decoder is known for it here; pip install python-gdcm covers most"


def _dicom_to_display(path: Path, ds, arr: np.ndarray) -> np.ndarray:
    """Modality LUT, then VOI LUT / window, then [0, 1] with MONOCHROME1 inverted."""
    from pydicom.pixels import apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if not photometric.startswith("MONOCHROME"):
        # Rescale and VOI apply to grayscale data only; colour was already reduced to luma.
        return _min_max(arr)
    try:
        values = apply_modality_lut(arr, ds)
        values, out_range = _apply_voi(values, ds)
    except Exception as exc:  # inconsistent LUT / window attributes
        raise InputImageError(path, f"cannot apply the DICOM rescale/window ({_short(exc)})") from None
    if out_range is None:
        unit = _min_max(values)
    else:
        lo, hi = out_range
        unit = _scaled(values, lo, hi)
        np.clip(unit, 0.0, 1.0, out=unit)
        if float(unit.min()) == float(unit.max()):
            raise InputImageError(
                path,
                "every pixel falls outside the DICOM window (WindowCenter/WindowWidth or VOI LUT); the header is wrong",
            )
    # MONOCHROME1 stores bone dark; invert so the output always reads as MONOCHROME2.
    if photometric == "MONOCHROME1":
        np.subtract(1.0, unit, out=unit)
    return unit


def _apply_voi(values: np.ndarray, ds) -> tuple[np.ndarray, tuple[float, float] | None]:
    """pydicom's VOI LUT or windowing, plus the range its output can span (None if neither).

    The output range, not the data's min/max, is what [0, 1] is scaled over: that keeps the
    window's meaning (a pixel at the window centre lands at 0.5).
    """
    from pydicom.pixels import apply_voi, apply_windowing

    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        lut = np.asarray(seq[0].LUTData, dtype=np.float64)
        return apply_voi(values, ds).astype(np.float64), (float(lut.min()), float(lut.max()))
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        # Probing with extreme inputs gives the window's output floor and ceiling exactly for
        # LINEAR windows and their asymptotes for SIGMOID ones.
        with np.errstate(over="ignore"):
            ends = apply_windowing(np.array([-1e30, 1e30]), ds)
        return apply_windowing(values, ds), (float(ends.min()), float(ends.max()))
    return values, None


def _min_max(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return _scaled(values, float(values.min()), float(values.max()))


def _scaled(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(values - lo) / (hi - lo) as a new float64 array, computed in place in it (zeros if hi <= lo)."""
    if not hi > lo:
        return np.zeros(np.shape(values), dtype=np.float64)
    unit = np.subtract(values, lo, dtype=np.float64)
    unit /= hi - lo
    return unit


def _short(exc: BaseException) -> str:
    """One-line description of a library exception for an error message."""
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
