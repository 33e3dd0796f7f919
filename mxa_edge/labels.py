"""The 14 CheXpert findings: the one source of truth for label names and order.

Everything that touches labels (data loading, the loss, metrics, the teacher adapter, the
exported manifest, predict's output) imports them from here.
"""

from __future__ import annotations

# CheXpert's column order, exactly as in CheXpert-v1.0 train.csv / valid.csv.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# Short names used in narrow tables (the paper's Table 3 abbreviations).
LABEL_ABBREVIATIONS: dict[str, str] = {
    "No Finding": "NF",
    "Enlarged Cardiomediastinum": "ECM",
    "Cardiomegaly": "CM",
    "Lung Opacity": "LO",
    "Lung Lesion": "LL",
    "Edema": "ED",
    "Consolidation": "CON",
    "Pneumonia": "PNA",
    "Atelectasis": "ATL",
    "Pneumothorax": "PTX",
    "Pleural Effusion": "PE",
    "Pleural Other": "PO",
    "Fracture": "FX",
    "Support Devices": "SD",
}

# CheXpert's metadata columns, in order, before the findings.
CHEXPERT_META_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
CHEXPERT_COLUMNS: tuple[str, ...] = CHEXPERT_META_COLUMNS + CHEXPERT_LABELS

NUM_LABELS = len(CHEXPERT_LABELS)


def label_index(name: str) -> int:
    """Index of a finding in CHEXPERT_LABELS; raises KeyError with the valid names."""
    try:
        return CHEXPERT_LABELS.index(name)
    except ValueError:
        raise KeyError(f"unknown finding {name!r}; expected one of {', '.join(CHEXPERT_LABELS)}") from None
