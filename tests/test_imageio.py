"""load_radiograph: every supported encoding lands in [0, 1] bone-white; every bad file is an InputImageError."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mxa_edge.imaging.imageio import MAX_PIXELS, SUPPORTED_SUFFIXES, is_supported_image, load_radiograph
from mxa_edge.support.errors import InputImageError

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_IMAGES = SHARED / "data" / "real-samples" / "images"


def _ramp(h: int = 32, w: int = 48, top: int = 255) -> np.ndarray:
    """Horizontal ramp 0..top (left dark, right bright)."""
    return np.tile(np.linspace(0, top, w).round(), (h, 1))


def _assert_unit_gray(img: np.ndarray, shape: tuple[int, int]) -> None:
    assert img.dtype == np.float32
    assert img.shape == shape
    assert img.min() >= 0.0 and img.max() <= 1.0


# --- PNG / JPEG ------------------------------------------------------------------------------


def test_png_8bit_gray(tmp_path):
    p = tmp_path / "gray.png"
    Image.fromarray(_ramp().astype(np.uint8), "L").save(p)
    img = load_radiograph(p)
    _assert_unit_gray(img, (32, 48))
    np.testing.assert_allclose(img, _ramp() / 255.0, atol=1e-6)


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data) & 0xFFFFFFFF)


def _png16(values: np.ndarray, sbit: int | None = None) -> bytes:
    """A 16-bit grayscale PNG written by hand (so the sBIT chunk can be added)."""
    h, w = values.shape
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))
    chunks = _png_chunk(b"IHDR", ihdr)
    if sbit is not None:
        chunks += _png_chunk(b"sBIT", bytes([sbit]))
    return b"\x89PNG\r\n\x1a\n" + chunks + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")


def test_png_16bit_full_range(tmp_path):
    values = _ramp(top=65535)
    p = tmp_path / "g16.png"
    Image.fromarray(values.astype(np.uint16)).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")
    img = load_radiograph(p)
    _assert_unit_gray(img, (32, 48))
    np.testing.assert_allclose(img, values / 65535.0, atol=1e-6)


def test_png_16bit_with_sbit_12_scales_by_4095(tmp_path):
    values = _ramp(top=4095)
    p = tmp_path / "g12.png"
    p.write_bytes(_png16(values, sbit=12))
    img = load_radiograph(p)
    np.testing.assert_allclose(img, values / 4095.0, atol=1e-6)
    assert img.max() == pytest.approx(1.0)


def test_png_16bit_without_sbit_scales_by_65535(tmp_path):
    values = _ramp(top=4095)
    p = tmp_path / "g12_nosbit.png"
    p.write_bytes(_png16(values))
    np.testing.assert_allclose(load_radiograph(p), values / 65535.0, atol=1e-6)


def test_png_16bit_sbit_but_full_range_values_use_65535(tmp_path):
    # An encoder that followed the PNG spec scaled 12-bit data up to 16 bits: never exceed 1.0.
    values = _ramp(top=65535)
    p = tmp_path / "g12_scaled.png"
    p.write_bytes(_png16(values, sbit=12))
    np.testing.assert_allclose(load_radiograph(p), values / 65535.0, atol=1e-6)


def test_png_rgb_rgba_palette_la_become_gray(tmp_path):
    gray = _ramp().astype(np.uint8)
    rgb = np.stack([gray] * 3, axis=-1)
    rgba = np.concatenate([rgb, np.full(gray.shape + (1,), 7, np.uint8)], axis=-1)  # near-transparent
    variants = {
        "rgb.png": Image.fromarray(rgb, "RGB"),
        "rgba.png": Image.fromarray(rgba, "RGBA"),
        "palette.png": Image.fromarray(rgb, "RGB").quantize(256),
        "la.png": Image.fromarray(np.stack([gray, gray], axis=-1), "LA"),
    }
    for name, im in variants.items():
        p = tmp_path / name
        im.save(p)
        img = load_radiograph(p)
        _assert_unit_gray(img, (32, 48))
        np.testing.assert_allclose(img, gray / 255.0, atol=2 / 255, err_msg=name)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    # Stored 40 tall x 60 wide with a bright block in the stored top-left corner.
    stored = np.full((40, 60), 30, np.uint8)
    stored[:10, :10] = 250
    im = Image.fromarray(stored, "L")
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    p = tmp_path / "rotated.jpg"
    im.save(p, exif=exif, quality=95)

    img = load_radiograph(p)
    _assert_unit_gray(img, (60, 40))  # shape swapped
    # Rotating clockwise moves the stored top-left corner to the displayed top-right.
    assert img[:8, -8:].mean() > 0.9
    assert img[:8, :8].mean() < 0.2
    assert img[-8:, -8:].mean() < 0.2


# --- DICOM -----------------------------------------------------------------------------------


def _dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **attrs) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_monochrome2_min_max(tmp_path):
    values = _ramp(top=4095)
    img = load_radiograph(_dicom(tmp_path / "m2.dcm", values))
    _assert_unit_gray(img, (32, 48))
    np.testing.assert_allclose(img, values / 4095.0, atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path):
    values = _ramp(top=4095)
    m2 = load_radiograph(_dicom(tmp_path / "m2.dcm", values))
    m1 = load_radiograph(_dicom(tmp_path / "m1.dcm", 4095 - values, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, m2, atol=1e-6)


def test_dicom_detected_by_preamble_without_suffix(tmp_path):
    p = _dicom(tmp_path / "m2.dcm", _ramp(top=4095))
    renamed = p.rename(tmp_path / "image_without_suffix")
    np.testing.assert_allclose(load_radiograph(renamed), _ramp(top=4095) / 4095.0, atol=1e-6)


def test_dicom_window_center_width(tmp_path):
    values = _ramp(w=64, top=4095)
    img = load_radiograph(_dicom(tmp_path / "win.dcm", values, WindowCenter=2048, WindowWidth=1024))
    # DICOM LINEAR window (PS3.3 C.11.2.1.2.1), scaled to [0, 1] over the window's output.
    c, w = 2048 - 0.5, 1024 - 1
    expected = np.clip((values - c) / w + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=1e-6)
    assert (img == 0).any() and (img == 1).any()


def test_dicom_rescale_then_window(tmp_path):
    # Stored 0..1000, slope 2, intercept -1000 -> -1000..1000; the window is in rescaled units.
    values = _ramp(w=64, top=1000)
    img = load_radiograph(
        _dicom(tmp_path / "hu.dcm", values, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=1001)
    )
    hu = values * 2 - 1000
    expected = np.clip((hu - (0 - 0.5)) / 1000 + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=1e-6)
    # Without the rescale, every stored value (>= 0) would sit above centre 0: mostly white.
    assert 0.3 < img.mean() < 0.7


def test_dicom_multiframe_refused(tmp_path):
    p = _dicom(tmp_path / "multi.dcm", np.stack([_ramp(top=4095)] * 3))
    with pytest.raises(InputImageError, match="multi-frame.*3 frames") as info:
        load_radiograph(p)
    assert "multi.dcm" in str(info.value)


def test_dicom_without_pixel_data(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    p = tmp_path / "report.dcm"
    ds.save_as(p, enforce_file_format=True)
    with pytest.raises(InputImageError, match="no pixel data") as info:
        load_radiograph(p)
    assert "report.dcm" in str(info.value)


def test_dicom_huge_header_refused_before_decoding(tmp_path):
    p = _dicom(tmp_path / "small.dcm", _ramp(top=4095))
    import pydicom

    ds = pydicom.dcmread(p)
    ds.Rows, ds.Columns = 20000, 20000  # claims 400 MP; the pixel data is still 32x48
    ds.save_as(p)
    with pytest.raises(InputImageError, match="20000x20000"):
        load_radiograph(p)


def test_truncated_dicom(tmp_path):
    p = _dicom(tmp_path / "cut.dcm", _ramp(top=4095))
    p.write_bytes(p.read_bytes()[:400])
    with pytest.raises(InputImageError) as info:
        load_radiograph(p)
    assert "cut.dcm" in str(info.value)


# --- bad files -------------------------------------------------------------------------------


def _png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _noise(shape) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, shape, np.uint8)


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (its pixel data is one short row)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


BAD_FILES = {
    "empty.png": (lambda: b"", "empty"),
    "truncated.png": (lambda: _png_bytes(_noise((64, 64)))[:300], "truncated"),
    "noise.jpg": (lambda: np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes(), "not a readable image"),
    "notes.png": (lambda: b"patient notes, not an image\n" * 10, "not a readable image"),
    "bomb.png": (lambda: _bomb_png(100_000, 100_000), "100000x100000"),
    "bomb_small.png": (lambda: _bomb_png(10_000, 9_000), "10000x9000"),
    "constant.png": (lambda: _png_bytes(np.full((16, 16), 77, np.uint8)), "same value"),
    "noise.dcm": (lambda: np.random.default_rng(2).integers(0, 256, 4096, np.uint8).tobytes(), "DICOM"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_input_image_error(tmp_path, name):
    make, expected = BAD_FILES[name]
    p = tmp_path / name
    p.write_bytes(make())
    with pytest.raises(InputImageError) as info:
        load_radiograph(p)
    message = str(info.value)
    assert name in message
    assert expected in message
    assert "\n" not in message


def test_bomb_guard_does_not_decode(tmp_path, monkeypatch):
    # 10000 x 9000 is under Pillow's own limit: only our header check stands in the way.
    assert 10_000 * 9_000 > MAX_PIXELS
    p = tmp_path / "bomb.png"
    p.write_bytes(_bomb_png(10_000, 9_000))

    def no_load(self):
        raise AssertionError("pixels decoded before the size check")

    from PIL import PngImagePlugin

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_load)
    with pytest.raises(InputImageError, match="pixel limit"):
        load_radiograph(p)


def test_constant_dicom(tmp_path):
    p = _dicom(tmp_path / "flat.dcm", np.full((8, 8), 500))
    with pytest.raises(InputImageError, match="same value"):
        load_radiograph(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputImageError, match="not found") as info:
        load_radiograph(tmp_path / "absent.png")
    assert "absent.png" in str(info.value)
    with pytest.raises(InputImageError, match="directory"):
        load_radiograph(tmp_path)


def test_unsupported_pillow_format(tmp_path):
    p = tmp_path / "scan.bmp"
    Image.fromarray(_ramp().astype(np.uint8), "L").save(p)
    with pytest.raises(InputImageError, match="unsupported format BMP"):
        load_radiograph(p)


def test_supported_suffixes():
    assert {".png", ".jpg", ".jpeg", ".dcm"} <= set(SUPPORTED_SUFFIXES)
    assert is_supported_image("a/b/IMAGE.PNG")
    assert is_supported_image(Path("x.dcm"))
    assert not is_supported_image("notes.txt")


# --- real radiographs ------------------------------------------------------------------------


def _real_images() -> list[Path]:
    if not REAL_IMAGES.is_dir():
        return []
    return sorted(p for p in REAL_IMAGES.iterdir() if p.is_file())


def test_real_samples_load():
    if not SHARED.is_dir():
        pytest.skip("../shared is absent: real images are not part of the repo")
    images = _real_images()
    assert images, f"no files in {REAL_IMAGES}"
    for p in images:
        img = load_radiograph(p)
        assert img.dtype == np.float32 and img.ndim == 2, p.name
        assert 0.0 <= img.min() and img.max() <= 1.0, p.name
        assert img.std() > 0.05, p.name


def test_dicom_compressed_without_decoder(tmp_path):
    # JPEG-LS needs pylibjpeg or pyjpegls, which the light install does not have.
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    for module in ("libjpeg", "jpeg_ls", "gdcm"):
        try:
            __import__(module)
            pytest.skip(f"{module} is installed: JPEG-LS can be decoded here")
        except ImportError:
            pass
    import pydicom

    p = _dicom(tmp_path / "jls.dcm", _ramp(top=4095))
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8not really jpeg-ls\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(p)
    with pytest.raises(InputImageError, match="compressed.*install its decoder") as info:
        load_radiograph(p)
    assert "jls.dcm" in str(info.value)
