"""The seed's reported results (../shared/SPEC.md, "Reported results"): the one copy in the package.

Evaluation reports put every model's numbers side by side with these. Keep them exactly as
SPEC.md states them; nothing else in the package may restate them.
"""

from __future__ import annotations

SOURCE = "seed (Keras MobileNetV2, SPEC.md 'Reported results')"

# split -> accuracy (fraction). The seed calls the validation split "validation".
ACCURACY = {"train": 0.9439, "val": 0.9113, "test": 0.9288}

# Per-class precision / recall / F1 on the seed's test split, then the two averages.
CLASS_REPORT: dict[str, tuple[float, float, float]] = {
    "battery": (0.9252, 0.9645, 0.9444),
    "biological": (0.9408, 0.9597, 0.9502),
    "cardboard": (0.9286, 0.9015, 0.9148),
    "clothes": (0.9924, 0.9750, 0.9836),
    "glass": (0.9643, 0.8804, 0.9205),
    "metal": (0.8204, 0.8954, 0.8562),
    "paper": (0.8929, 0.8929, 0.8929),
    "plastic": (0.8429, 0.9362, 0.8871),
    "shoes": (0.9589, 0.9428, 0.9508),
    "trash": (0.8039, 0.8662, 0.8339),
}
AVERAGES: dict[str, tuple[float, float, float]] = {
    "macro avg": (0.9070, 0.9215, 0.9134),
    "weighted avg": (0.9316, 0.9288, 0.9295),
}
EPOCHS = 9


def reference_row(name: str) -> dict[str, float] | None:
    """{'precision', 'recall', 'f1'} of a class or average row of the seed's report, None if it has none."""
    values = CLASS_REPORT.get(name) or AVERAGES.get(name)
    if values is None:
        return None
    return dict(zip(("precision", "recall", "f1"), values))
