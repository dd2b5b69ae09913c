"""The detection report of a run over photos (``align --detect``, ``embed --detect``): counts per outcome, timing,
settings, and every photo that did not give exactly one clear face, with each face's box, score and landmarks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from facerec.data.detection.choice import FaceChoice, Outcome
from facerec.data.detection.mtcnn import FaceDetector
from facerec.data.detection.networks import WEIGHTS_PACKAGE

UNREADABLE = "unreadable"
"""Status of a file that cannot be decoded (no detection ran)."""
RULE = "largest x most central face with score >= min_score: box area x (1 - centre offset / half diagonal)"


def detector_settings(detector: FaceDetector, min_score: float) -> dict[str, Any]:
    """The report's ``min_score``, ``rule`` and ``detector`` entries."""
    return {
        "min_score": min_score,
        "rule": RULE,
        "detector": {
            "name": "MTCNN",
            "weights": WEIGHTS_PACKAGE,
            "min_face_size": detector.min_face_size,
            "thresholds": list(detector.thresholds),
            "factor": detector.factor,
            "device": str(detector.device),
        },
    }


@dataclass
class DetectionReport:
    """Outcomes of a run over photos.

    Attributes:
        settings: What the run was given (JSON-ready), written first.
        counts: Photos per status (:class:`~facerec.data.detection.choice.Outcome` values and ``unreadable``).
        problems: One JSON-ready entry per photo not ``one_face``: ``path``, ``status``, ``kept`` (index into
            ``faces`` or null), ``faces`` (box, score, landmarks of each) or, if unreadable, ``error``.
        seconds: Wall time of the run.
    """

    settings: dict[str, Any] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    problems: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def photos(self) -> int:
        """Photos seen."""
        return sum(self.counts.values())

    @property
    def kept(self) -> int:
        """Photos with a kept face."""
        return self.counts[Outcome.ONE_FACE] + self.counts[Outcome.SEVERAL_FACES]

    def add(self, path: str, choice: FaceChoice) -> None:
        """Counts a photo's outcome; lists it unless it is ``one_face``."""
        self.counts[choice.outcome] += 1
        if choice.outcome is Outcome.ONE_FACE:
            return
        faces = choice.faces
        self.problems.append(
            {
                "path": path,
                "status": str(choice.outcome),
                "kept": choice.index,
                "faces": [
                    {
                        "box": [round(float(v), 2) for v in faces.boxes[k]],
                        "score": round(float(faces.scores[k]), 5),
                        "landmarks": [[round(float(v), 2) for v in point] for point in faces.landmarks[k]],
                    }
                    for k in range(len(faces))
                ],
            }
        )

    def add_unreadable(self, path: str, error: Exception) -> None:
        """Counts and lists a file that could not be decoded."""
        self.counts[UNREADABLE] += 1
        self.problems.append({"path": path, "status": UNREADABLE, "kept": None, "error": str(error)})

    def table(self) -> str:
        """The summary table (plain text): photos and share per outcome, then the time per photo."""
        rows = [(status, self.counts[status]) for status in [*Outcome, UNREADABLE]]
        rows += [("face kept", self.kept), ("photos", self.photos)]
        width = max(len(name) for name, _ in rows)
        lines = [f"{'outcome':<{width}}  {'photos':>7}  {'share':>7}", f"{'-' * width}  {'-' * 7}  {'-' * 7}"]
        lines += [f"{name:<{width}}  {count:>7}  {count / max(self.photos, 1):>7.2%}" for name, count in rows]
        if self.seconds and self.photos:
            lines.append(
                f"{self.seconds:.1f} s: {self.photos / self.seconds:.2f} photos/s, "
                f"{1000 * self.seconds / self.photos:.1f} ms per photo"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            **self.settings,
            "counts": {status: self.counts[status] for status in [*Outcome, UNREADABLE]},
            "photos": self.photos,
            "kept": self.kept,
            "seconds": round(self.seconds, 3),
            "photos_per_second": round(self.photos / self.seconds, 3) if self.seconds else None,
            "problems": self.problems,
        }
