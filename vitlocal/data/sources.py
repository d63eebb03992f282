"""Where the images come from: named sources, archives, downloads with checksums, ImageNet subsets.

A *source* is one string (the ``--data`` argument):

    synthetic              motif images generated from a seed (`vitlocal.data.synthetic`), the default
    imagenette[:PATH]      fast.ai's 10-class ImageNet subset: the official 160 px archive (downloaded and
                           checked against its sha256), or a local archive / folder in ImageNet layout
    cifar10[:PATH]         CIFAR-10: the official binary archive (downloaded and checked), or a local copy
                           (the binary archive, or an ImageNet-layout folder / archive with train/ and test/)
    imagenet:PATH          ILSVRC-2012 in the standard layout ``PATH/{train,val}/<wnid>/*.JPEG``
    imagenet100:PATH       the common 100-class subset (`IMAGENET100`) of that folder
    PATH                   any ImageNet-layout folder or ``.tar.gz`` archive

Archives are extracted once into the cache folder (``$VITLOCAL_CACHE``, default ``~/.cache/vitlocal``),
under a name that holds the archive's sha256 (two archives share an entry only when their bytes are equal),
and read from there. Extraction refuses, on every Python, a member that could write outside its folder: an
absolute path, a ``..`` in a path or a link target, an absolute link target, a device or a pipe. A damaged
archive is a clear error that leaves nothing behind in the cache.

A split is either a `FileList` (paths, decoded by `vitlocal.data.images`) or an `ImageTensors` (already
pixels: synthetic, CIFAR-10's binary format).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import posixpath
import random
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "SOURCES",
    "Download",
    "IMAGENETTE",
    "CIFAR10",
    "IMAGENET100",
    "FileList",
    "ImageTensors",
    "parse_source",
    "cache_dir",
    "download",
    "extract",
    "scan_folder",
    "read_cifar10_binary",
    "imagenet_subset",
]

SOURCES = ("synthetic", "imagenette", "cifar10", "imagenet", "imagenet100")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


@dataclass(frozen=True)
class Download:
    """An official archive: where it lives, its sha256 and its size in bytes."""

    url: str
    sha256: str
    size: int


# Checksums as published in tensorflow/datasets (url_checksums/imagenette.txt and cifar10.txt).
IMAGENETTE = Download(
    "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
    "88daccb09b6fce93f45e6c09ddeb269cce705549e6bff322092a2a5a11489863",
    98_948_031,
)
CIFAR10 = Download(
    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    170_052_171,
)

# The common ImageNet-100 subset: the list of Tian, Krishnan and Isola, "Contrastive Multiview Coding"
# (arXiv 1906.05849), file imagenet100.txt of github.com/HobbitLong/CMC, in that file's order.
IMAGENET100 = tuple(
    """
    n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890 n03062245 n01773797
    n01735189 n07831146 n07753275 n03085013 n04485082 n02105505 n01983481 n02788148 n03530642 n04435653
    n02086910 n02859443 n13040303 n03594734 n02085620 n02099849 n01558993 n04493381 n02109047 n04111531
    n02877765 n04429376 n02009229 n01978455 n02106550 n01820546 n01692333 n07714571 n02974003 n02114855
    n03785016 n03764736 n03775546 n02087046 n07836838 n04099969 n04592741 n03891251 n02701002 n03379051
    n02259212 n07715103 n03947888 n04026417 n02326432 n03637318 n01980166 n02113799 n02086240 n03903868
    n02483362 n04127249 n02089973 n03017168 n02093428 n02804414 n02396427 n04418357 n02172182 n01729322
    n02113978 n03787032 n02089867 n02119022 n03777754 n04238763 n02231487 n03032252 n02138441 n02104029
    n03837869 n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630 n03584829 n02123045
    n04229816 n02100583 n03642806 n04336792 n03259280 n02116738 n02108089 n03424325 n01855672 n02090622
    """.split()
)


@dataclass
class FileList:
    """One split as image files: ``samples[i] = (path, label)``; ``classes[label]`` is the folder name."""

    samples: list[tuple[str, int]]
    classes: list[str]


@dataclass
class ImageTensors:
    """One split as pixels: ``images`` ``(N, 3, H, W)`` uint8, ``labels`` ``(N,)`` int64, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def parse_source(spec: str) -> tuple[str, str | None]:
    """``"imagenette:/data/x.tgz" -> ("imagenette", "/data/x.tgz")``; a bare path is ``("folder", path)``."""
    name, sep, path = spec.partition(":")
    if name in SOURCES:
        if name in ("imagenet", "imagenet100") and not path:
            raise ValueError(f"--data {name} needs the ImageNet folder: --data {name}:/path/to/ILSVRC2012")
        return name, (path or None) if sep else None
    if Path(spec).exists():
        return "folder", spec
    raise ValueError(
        f"--data {spec!r} is neither a source name ({', '.join(SOURCES)}, optionally NAME:PATH) nor an existing "
        f"folder or archive; check the path or use --data synthetic"
    )


def cache_dir() -> Path:
    """The folder for downloads and extracted archives: ``$VITLOCAL_CACHE`` or ``~/.cache/vitlocal``."""
    path = Path(os.environ.get("VITLOCAL_CACHE", Path.home() / ".cache" / "vitlocal")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(path: Path) -> str:
    """The file's sha256 (computed once per process for a given path, inode, size and modification time)."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(item: Download) -> Path:
    """The official archive in the cache folder: downloaded once; a cached copy is used only when its sha256 is the
    published one (else it is downloaded again)."""
    path = cache_dir() / item.url.rsplit("/", 1)[1]
    if path.exists() and _sha256(path) == item.sha256:
        return path
    partial = path.with_suffix(path.suffix + ".part")
    print(f"downloading {item.url} ({item.size / 2**20:.0f} MiB) to {path}")
    try:
        urllib.request.urlretrieve(item.url, partial)
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise FileNotFoundError(
            f"cannot download {item.url} ({err}); offline? fetch it elsewhere and pass its path as NAME:PATH"
        ) from err
    if (digest := _sha256(partial)) != item.sha256:
        partial.unlink()
        raise OSError(f"{item.url}: sha256 {digest} does not match the published {item.sha256}; download again")
    partial.rename(path)
    return path


def _leaves(name: str) -> bool:
    """Whether an archive path (or link target) could point outside the extraction folder: absolute, or with
    a ``..`` anywhere (without ``..``, relative links that point only downwards cannot climb out, however chained)."""
    return posixpath.isabs(name) or ".." in name.split("/")


def _safe_members(tar: tarfile.TarFile, archive: Path) -> Iterator[tarfile.TarInfo]:
    """The members of ``tar``, each checked before it is extracted; an unsafe one stops the extraction."""
    for member in tar:
        problem = None
        if _leaves(member.name):
            problem = "has an absolute path or a '..' in it"
        elif (member.issym() or member.islnk()) and _leaves(member.linkname):
            problem = f"is a link to {member.linkname!r}, which may lie outside the extracted folder"
        elif member.isdev():
            problem = "is a device or a pipe"
        if problem:
            raise ValueError(
                f"{archive}: member {member.name!r} {problem}; refusing to extract it. If you trust the archive, "
                f"unpack it yourself and pass the folder as --data"
            )
        yield member


def extract(archive: str | Path) -> Path:
    """A ``.tar.gz`` / ``.tgz`` / ``.tar`` archive extracted once into the cache folder; returns that folder.

    The folder is named after the archive and its sha256. Extraction goes to a temporary folder that is renamed
    when complete, and that is removed when extraction fails, so the cache never holds a half-extracted data set.
    """
    archive = Path(archive).resolve()
    stem = archive.name.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar")
    target = cache_dir() / "extracted" / f"{stem}-{_sha256(archive)[:16]}"
    if target.is_dir():
        return target
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    print(f"extracting {archive} to {target}")
    # Python >= 3.10.12 also has tarfile's own "data" filter: use it too (it also drops setuid bits)
    data_filter = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, members=_safe_members(tar, archive), **data_filter)
        tmp.rename(target)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(
            f"--data {archive} is damaged (cut short?) or not a tar archive ({type(err).__name__}: {err}); "
            f"download it again, or pass the extracted folder"
        ) from err
    except OSError:
        if not target.is_dir():  # else another process (a DDP rank) has just extracted the same archive
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _split_folder(root: Path, split: str) -> Path:
    """``root/split``, also one level down (archives hold one top folder); ``val`` falls back to ``test``."""
    names = (split, "test") if split == "val" else (split,)
    for base in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        for name in names:
            if (base / name).is_dir():
                return base / name
    raise FileNotFoundError(f"{root} has no {split}/ folder; expected the ImageNet layout {root}/{split}/<class>/*")


def scan_folder(root: str | Path, split: str) -> FileList:
    """The images of ``root/split/<class>/*`` (ImageNet layout), classes and files in sorted order."""
    folder = _split_folder(Path(root), split)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    samples = [
        (str(path), label)
        for label, name in enumerate(classes)
        for path in sorted((folder / name).iterdir())
        if path.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not samples:
        raise FileNotFoundError(f"{folder} holds no images (expected {folder}/<class>/*.JPEG)")
    return FileList(samples, classes)


def read_cifar10_binary(root: str | Path, split: str) -> ImageTensors:
    """CIFAR-10 from the official binary archive, extracted to ``root``: records of 1 label byte + 3 x 32 x 32
    pixel bytes (R, G, B planes, rows in order)."""
    folder = next(Path(root).rglob("batches.meta.txt")).parent
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    records = np.concatenate([np.fromfile(folder / name, dtype=np.uint8).reshape(-1, 3073) for name in names])
    classes = [line for line in (folder / "batches.meta.txt").read_text().split() if line]
    images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy())
    return ImageTensors(images, torch.from_numpy(records[:, 0].astype(np.int64)), classes)


def imagenet_subset(
    root: str | Path,
    classes: int | Sequence[str] = IMAGENET100,
    per_class: int | None = None,
    split: str = "train",
    seed: int = 0,
    out: str | Path | None = None,
) -> FileList:
    """N classes x M images of a full ImageNet folder, deterministically.

    ``classes``: a list of wnids (default: the common ImageNet-100 list) or a number N, then N wnids drawn
    with ``seed`` from the folder's sorted class list. ``per_class``: M images per class, drawn with ``seed``
    from each class's sorted files (``None``: all). ``out``: also build a symlink tree
    ``out/split/<wnid>/<file>`` (a folder any ImageNet-layout reader takes) and list its paths.
    """
    folder = _split_folder(Path(root), split)
    if isinstance(classes, int):
        available = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not 0 < classes <= len(available):
            raise ValueError(f"classes={classes} must lie in [1, {len(available)}] ({folder} has {len(available)})")
        classes = sorted(random.Random(seed).sample(available, classes))
    missing = [wnid for wnid in classes if not (folder / wnid).is_dir()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {len(missing)} of the requested classes, e.g. {missing[:3]}")
    samples = []
    for label, wnid in enumerate(classes):
        files = sorted(p for p in (folder / wnid).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if per_class is not None:
            if per_class > len(files):
                raise ValueError(f"per_class={per_class} but {folder / wnid} holds only {len(files)} images")
            files = sorted(random.Random(f"{seed}-{wnid}").sample(files, per_class))
        for path in files:
            if out is not None:
                link = Path(out) / split / wnid / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.is_symlink():
                    link.symlink_to(path.resolve())
                path = link
            samples.append((str(path), label))
    return FileList(samples, list(classes))
