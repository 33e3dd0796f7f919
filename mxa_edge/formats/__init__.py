"""The run and artifact formats (torch-free): typed, versioned records of what ``train`` and
``export`` write, the one place a data split is decided, precision names and folder naming.

Everything else reads these objects, never raw manifest JSON.
"""

from mxa_edge.formats.artifact import Artifact, ArtifactManifest, SourceRun, load_artifact
from mxa_edge.formats.decision import DecisionRule
from mxa_edge.formats.naming import artifact_dir_name, is_artifact, is_run
from mxa_edge.formats.precision import Int8Scheme, NumericFormat, Precision
from mxa_edge.formats.run import RunRecord
from mxa_edge.formats.selection import DataSelection

__all__ = [
    "Artifact",
    "ArtifactManifest",
    "DataSelection",
    "DecisionRule",
    "Int8Scheme",
    "NumericFormat",
    "Precision",
    "RunRecord",
    "SourceRun",
    "artifact_dir_name",
    "is_artifact",
    "is_run",
    "load_artifact",
]
