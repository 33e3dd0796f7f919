"""The toolkit's own error types.

User-facing problems (a bad image, a CSV without the expected columns, an artifact whose
hashes do not match, a drift gate that fails) raise one of these; the CLI maps each class to
a one-line message and an exit code. Programming errors stay ordinary Python exceptions.
"""

from __future__ import annotations


class MxaError(Exception):
    """Base class of every error the CLI reports as a one-line message."""

    exit_code = 1


class InputImageError(MxaError):
    """An image file could not be read or is not a usable radiograph."""

    exit_code = 3

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatasetError(MxaError):
    """A dataset folder or CSV is missing, malformed or empty."""

    exit_code = 4


class ConfigError(MxaError):
    """Options that cannot work together, or an unknown model/target name."""

    exit_code = 2


class MissingDependencyError(MxaError):
    """An optional dependency (torch, TensorRT, CUDA...) is not installed here."""

    exit_code = 5


class ArtifactError(MxaError):
    """An exported artifact or run folder is incomplete, mismatched or tampered with."""

    exit_code = 6


class DriftGateError(MxaError):
    """An exported model drifted past its AUC bound and was not published."""

    exit_code = 7


def require(module: str, extra: str = "train"):
    """Import an optional heavy dependency, or fail with how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the install profile
        raise MissingDependencyError(
            f"{module} is not installed ({exc}); install the [{extra}] extra: pip install 'mxa-edge[{extra}]'"
        ) from exc


class VerificationError(MxaError):
    """An artifact's golden vectors do not reproduce on this machine (``mxa-edge verify``)."""

    exit_code = 8
