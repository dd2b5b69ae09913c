"""Dataset tools behind ``python -m facerec.data``: check, folder2rec, rec2folder, make-pairs, make-search.

Identity folders are scanned as in training (:func:`~facerec.data.training.folder.scan_identity_folder`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shlex
import shutil
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from facerec.data.decode import CorruptImageError, decode_image, encode_jpeg, read_image
from facerec.data.training.folder import FolderIndex, scan_identity_folder
from facerec.data.training.rec_dataset import RecordDataset
from facerec.data.training.recordio import IRHeader, RecordIOError, RecordWriter, pack, unpack
from facerec.data.verification.pairs import check_pair_name, write_pairs

logger = logging.getLogger(__name__)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class CheckReport:
    """What ``check`` found.

    Attributes:
        kind: ``"identity folder"`` or ``"train.rec"``.
        images_per_identity: Image count per labelled identity.
        empty: Identities without images.
        non_images: Non-image files (identity folders only).
        corrupt: One message per unreadable image (file or ``file.rec@offset``).
        sizes: Histogram of decoded (H, W).
    """

    path: Path
    kind: str
    images_per_identity: list[int]
    empty: list[str]
    non_images: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)

    def format(self) -> str:
        """A human-readable summary."""
        counts = self.images_per_identity
        lines = [
            f"{self.path} ({self.kind})",
            f"identities: {len(counts)}",
            f"images: {sum(counts)} (per identity: min {min(counts, default=0)}, max {max(counts, default=0)})",
            "image sizes (HxW): " + ", ".join(f"{h}x{w}: {n}" for (h, w), n in self.sizes.most_common()),
        ]
        for title, items in (
            ("empty identities", self.empty),
            ("non-image files", self.non_images),
            ("corrupt or unreadable images", self.corrupt),
        ):
            lines.append(f"{title}: {len(items)}")
            lines += [f"  {item}" for item in items]
        return "\n".join(lines)


def check(path: str | Path) -> CheckReport:
    """Decodes every image of ``path/train.rec`` if it exists, else of identity folder ``path``.

    Raises FileNotFoundError if ``path`` is neither.
    """
    path = Path(path)
    if (path / "train.rec").is_file():
        return _check_rec(path)
    folder = scan_identity_folder(path)
    report = CheckReport(
        path,
        "identity folder",
        [len(files) for files in folder.images],
        folder.empty_identities,
        [str(p) for p in folder.skipped_files],
    )
    for image_path in folder.paths:
        try:
            image = read_image(image_path)
        except (CorruptImageError, OSError) as error:
            report.corrupt.append(str(error))
        else:
            report.sizes[image.shape[:2]] += 1
    return report


def _check_rec(path: Path) -> CheckReport:
    dataset = RecordDataset(path)
    counts = Counter(dataset.labels)
    per_identity = [counts[label] for label in range(dataset.num_classes)]
    empty = [name for name, count in zip(dataset.class_names, per_identity, strict=True) if not count]
    report = CheckReport(path, "train.rec", per_identity, empty)
    for index in range(len(dataset)):
        try:
            image, _ = dataset[index]
        except (CorruptImageError, RecordIOError) as error:
            report.corrupt.append(str(error))
        else:
            report.sizes[image.shape[:2]] += 1
    return report


def _jpeg_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    image = decode_image(data, source=str(path))
    return data if data.startswith(_JPEG_MAGIC) else encode_jpeg(image)


def folder_to_rec(src: str | Path, dst: str | Path) -> tuple[int, int]:
    """Packs an identity folder into insightface ``dst/train.rec`` + ``train.idx``; returns (images, identities).

    Labels as in training (empty folders skipped with a warning). Record 0: ``IRHeader(flag=2,
    label=[N+1, N+1+C])``; keys 1..N: images (JPEG kept, others re-encoded); keys N+1..N+C: identities with
    label ``[first key, end key)``. Every image is decoded to validate it. Both files are written to temporaries
    renamed into place at the end; on error ``dst`` is left as it was.

    Raises:
        CorruptImageError: A source image cannot be decoded.
    """
    folder = scan_identity_folder(src)
    dst = Path(dst)
    created = not dst.exists()
    dst.mkdir(parents=True, exist_ok=True)
    count, classes = len(folder.paths), len(folder.class_names)
    if folder.empty_identities:
        logger.warning(
            "skipped %d identity folders without images (no label, as in training): %s",
            len(folder.empty_identities),
            ", ".join(folder.empty_identities),
        )
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    targets = {dst / name: dst / f".{name}.{tag}.tmp" for name in ("train.rec", "train.idx")}
    rec_tmp, idx_tmp = targets.values()
    try:
        with RecordWriter(rec_tmp, idx_tmp) as writer:
            writer.write(0, pack(IRHeader(2, [count + 1, count + 1 + classes], 0, 0), b""))
            key, ranges = 1, []
            for label, files in enumerate(folder.images):
                start = key
                for path in files:
                    try:
                        data = _jpeg_bytes(path)
                    except CorruptImageError as error:
                        raise CorruptImageError(
                            f"{error}; nothing was written to {dst}; run `python -m facerec.data check "
                            f"{shlex.quote(str(folder.root))}` to list every unreadable image, then fix or remove them"
                        ) from error
                    writer.write(key, pack(IRHeader(0, float(label), key, 0), data))
                    key += 1
                ranges.append((start, key))
            for label, key_range in enumerate(ranges):
                identity_key = count + 1 + label
                writer.write(identity_key, pack(IRHeader(2, list(key_range), identity_key, 0), b""))
        for target, temporary in targets.items():
            os.replace(temporary, target)
    except BaseException:
        for temporary in targets.values():
            temporary.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                dst.rmdir()
        raise
    return count, classes


def rec_to_folder(src: str | Path, dst: str | Path) -> tuple[int, int]:
    """Unpacks ``src/train.rec`` into ``dst/CLASS/KEY.jpg``; returns (images, identity folders).

    Zero-padded names keep label and record order; empty classes get no folder. JPEG and PNG payloads are
    copied, others re-encoded as JPEG.

    Raises:
        CorruptImageError: A record is not a decodable image.
    """
    dataset = RecordDataset(src)
    dst = Path(dst)
    class_width = len(str(max(dataset.num_classes - 1, 0)))
    key_width = len(str(max(dataset.keys, default=0)))
    for label in sorted(set(dataset.labels)):
        (dst / f"{label:0{class_width}d}").mkdir(parents=True, exist_ok=True)
    for key, label in zip(dataset.keys, dataset.labels, strict=True):
        source = dataset.reader.source(key)
        _, payload = unpack(dataset.reader.read(key), source)
        image = decode_image(payload, source=source)
        if payload.startswith(_PNG_MAGIC):
            name, data = f"{key:0{key_width}d}.png", payload
        else:
            name, data = (
                f"{key:0{key_width}d}.jpg",
                payload if payload.startswith(_JPEG_MAGIC) else encode_jpeg(image),
            )
        (dst / f"{label:0{class_width}d}" / name).write_bytes(data)
    return len(dataset), len(set(dataset.labels))


def _lfw_numbers(folder: FolderIndex) -> dict[str, list[int]]:
    numbers = {}
    for name, files in zip(folder.class_names, folder.images, strict=True):
        pattern = re.compile(rf"{re.escape(name)}/{re.escape(name)}_(\d{{4}})\.jpg")
        numbers[name] = []
        for path in files:
            relative = path.relative_to(folder.root).as_posix()
            match = pattern.fullmatch(relative)
            if match is None:
                raise ValueError(
                    f"{folder.root}: make-pairs needs LFW file names NAME/NAME_%04d.jpg (pairs.txt stores "
                    f"only the identity name and image number, e.g. {name}/{name}_0001.jpg), "
                    f"found {relative}; rename the images of each identity to that pattern"
                )
            numbers[name].append(int(match.group(1)))
    return numbers


def _draw_unique(rng: random.Random, count: int, capacity: int, draw: Callable[[], tuple], what: str) -> list:
    if capacity < count:
        raise ValueError(
            f"{what}: only {capacity} distinct pairs possible, {count} requested; "
            "add identities or images, or lower --folds / --pairs-per-fold"
        )
    drawn: set[tuple] = set()
    while len(drawn) < count:
        drawn.add(draw())
    return sorted(drawn)


def make_pairs(root: str | Path, out: str | Path, folds: int = 10, pairs_per_fold: int = 300, seed: int = 0) -> None:
    """Writes a balanced LFW-style ``pairs.txt`` (tab-separated UTF-8) for the identities in ``root``.

    Identities (largest first) go to the fold with fewest possible same pairs, so folds are identity-disjoint;
    each fold gets ``pairs_per_fold`` distinct same and as many different pairs.

    Raises:
        ValueError: Non-positive counts, a file not named ``NAME/NAME_%04d.jpg``, a name unstorable in
            ``pairs.txt`` (tab, line break, outer whitespace), or too few distinct pairs in a fold.
    """
    if folds < 1 or pairs_per_fold < 1:
        raise ValueError(f"folds and pairs per fold must be positive, got {folds} and {pairs_per_fold}")
    numbers = _lfw_numbers(scan_identity_folder(root))
    for name in numbers:
        try:
            check_pair_name(name)
        except ValueError as error:
            raise ValueError(f"{root}: {error}") from None
    rng = random.Random(seed)
    names = sorted(numbers)
    rng.shuffle(names)
    names.sort(key=lambda name: -len(numbers[name]))
    fold_members: list[list[str]] = [[] for _ in range(folds)]
    fold_capacity = [0] * folds
    for name in names:
        fold = min(range(folds), key=lambda index: (fold_capacity[index], len(fold_members[index])))
        fold_members[fold].append(name)
        fold_capacity[fold] += len(numbers[name]) * (len(numbers[name]) - 1) // 2
    blocks = []
    for fold, members in enumerate(fold_members):
        multi = [name for name in members if len(numbers[name]) > 1]
        sizes = [len(numbers[name]) for name in members]
        where = f"{root}: fold {fold + 1} of {folds} ({len(members)} identities, {sum(sizes)} images)"

        def same(multi: list[str] = multi) -> tuple[str, int, int]:
            name = rng.choice(multi)
            first, second = sorted(rng.sample(numbers[name], 2))
            return name, first, second

        def different(members: list[str] = members) -> tuple[str, int, str, int]:
            first, second = sorted(rng.sample(members, 2))
            return first, rng.choice(numbers[first]), second, rng.choice(numbers[second])

        same_capacity = sum(size * (size - 1) // 2 for size in sizes)
        different_capacity = (sum(sizes) ** 2 - sum(size * size for size in sizes)) // 2
        blocks.append(
            (
                _draw_unique(rng, pairs_per_fold, same_capacity, same, f"{where}, same-identity"),
                _draw_unique(rng, pairs_per_fold, different_capacity, different, f"{where}, different-identity"),
            )
        )
    write_pairs(out, blocks)


def make_search(
    root: str | Path, out: str | Path, gallery_images: int = 1, unenrolled: float = 0.25, seed: int = 0
) -> tuple[int, int, int]:
    """Splits an identity folder into identity folders ``out/gallery`` and ``out/probe`` (files copied).

    An ``unenrolled`` fraction of identities (at least one) goes to probes only; every other identity with
    more than ``gallery_images`` images enrols that many random ones, the rest are probes; smaller ones are dropped.

    Returns:
        (gallery images, probe images, unenrolled identities).

    Raises:
        FileExistsError: ``out`` exists and is not empty.
        ValueError: Options out of range, or no identity can be enrolled.
    """
    if gallery_images < 1 or not 0 < unenrolled < 1:
        raise ValueError(f"need gallery images >= 1 and 0 < unenrolled < 1, got {gallery_images} and {unenrolled}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: choose a new folder")
    index = scan_identity_folder(root)
    rng = random.Random(seed)
    usable = [k for k, files in enumerate(index.images) if len(files) > gallery_images]
    left_out = set(rng.sample(range(len(index.class_names)), max(1, round(unenrolled * len(index.class_names)))))
    enrolled = [k for k in usable if k not in left_out]
    if not enrolled:
        raise ValueError(
            f"{root}: no identity left to enrol with more than {gallery_images} images; "
            "lower --gallery-images or --unenrolled"
        )
    counts = [0, 0]
    for k, (name, files) in enumerate(zip(index.class_names, index.images, strict=True)):
        if k not in left_out and k not in enrolled:
            continue
        chosen = set(rng.sample(range(len(files)), gallery_images)) if k in enrolled else set()
        for i, path in enumerate(files):
            part = "gallery" if i in chosen else "probe"
            target = out / part / name / path.relative_to(index.root / name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            counts[part == "probe"] += 1
    return counts[0], counts[1], len(left_out)
