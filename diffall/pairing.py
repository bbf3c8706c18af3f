"""Pairing two folders by file name, for ``diffall batch submit DIR_A DIR_B``.

Rules:

- both folders are walked recursively; a file is named by its path relative to its folder,
  with ``/`` separators (``pages/home.png``), compared exactly (case-sensitive);
- a file whose name is in both folders makes a pair (A from ``DIR_A``, B from ``DIR_B``);
- an image name in one folder only is reported (``only_in_a`` / ``only_in_b``), never dropped
  silently;
- hidden files and folders (a name part starting with ``.``) are left out, and so are files
  without an image extension (:data:`IMAGE_SUFFIXES`, any case): those are counted in
  ``ignored``, so a stray ``notes.txt`` or ``Thumbs.db`` does not become a failing pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["IMAGE_SUFFIXES", "FolderPairs", "Pair", "pair_folders"]

#: File name endings taken as images (the formats the engine reads), compared in lower case.
IMAGE_SUFFIXES: Final = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
)


@dataclass(frozen=True)
class Pair:
    """Two files with the same relative ``name`` in folder A and folder B."""

    name: str
    a: Path
    b: Path


@dataclass(frozen=True)
class FolderPairs:
    """The outcome of pairing two folders; every list sorted by name."""

    pairs: list[Pair]
    only_in_a: list[str]
    only_in_b: list[str]
    ignored: list[str]

    @property
    def unmatched(self) -> int:
        """Image files present in one folder only (>= 0)."""
        return len(self.only_in_a) + len(self.only_in_b)


def _images(root: Path) -> tuple[dict[str, Path], set[str]]:
    """Image files under ``root`` by relative name, and the other (non-hidden) file names."""
    images: dict[str, Path] = {}
    others: set[str] = set()
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        name = relative.as_posix()
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images[name] = path
        else:
            others.add(name)
    return images, others


def pair_folders(dir_a: Path, dir_b: Path) -> FolderPairs:
    """Pair the image files of ``dir_a`` and ``dir_b`` by relative name (module docstring).

    Raises
    ------
    NotADirectoryError
        When either path is not an existing folder (``filename`` is the path).
    """
    for folder in (dir_a, dir_b):
        if not folder.is_dir():
            raise NotADirectoryError(0, "not a folder", str(folder))
    images_a, others_a = _images(dir_a)
    images_b, others_b = _images(dir_b)
    both = sorted(images_a.keys() & images_b.keys())
    return FolderPairs(
        pairs=[Pair(name, images_a[name], images_b[name]) for name in both],
        only_in_a=sorted(images_a.keys() - images_b.keys()),
        only_in_b=sorted(images_b.keys() - images_a.keys()),
        ignored=sorted(others_a | others_b),
    )
