"""mxa-edge: chest X-ray classifiers (EfficientViT + MXA, distilled) for workstations and edge boxes.

Importing the package is cheap and never imports torch: training and export modules load
their heavy dependencies when used; the runtime (predict) path needs only numpy, Pillow,
pydicom and ONNX Runtime or OpenVINO.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mxa-edge")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
