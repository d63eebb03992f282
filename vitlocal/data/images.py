"""Decoding image files on the CPU: PIL to RGB, then only what needs the original pixels.

The CPU does the work that must see the full-resolution image, and nothing else:

    train:  decode -> random resized crop straight to S x S (``Image.resize(box=...)``, bicubic)
    eval:   decode -> resize the shorter side to int(S / crop_pct) (bicubic) -> centre crop S x S
            (DeiT: crop_pct = 224 / 256 = 0.875)
    store:  the eval transform at a larger size, for the in-memory fast path (decode once, crop later)

and hands over uint8 ``(3, S, S)`` tensors; flip, RandAugment, normalisation, erasing and mixup run on
the batch, on the training device (`vitlocal.data.augment`). JPEGs are decoded at a reduced scale in
the DCT domain when the target is small (``Image.draft``). A file that cannot be read or decoded is
skipped (the batch is one image shorter), counted, and reported once: a truncated or corrupt file, a
file that is not an image, one that cannot be opened, and one so large that PIL refuses it as a possible
decompression bomb (``Image.MAX_IMAGE_PIXELS``). 16-bit images are scaled to 8 bits, CMYK and grayscale ones
converted to RGB.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vitlocal.data.augment import crop_boxes
from vitlocal.data.sources import FileList, ImageTensors

__all__ = [
    "to_rgb",
    "to_tensor",
    "centre_crop_box",
    "EvalTransform",
    "TrainTransform",
    "ImageFiles",
    "collate",
    "warn_skipped",
    "decode_all",
]


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB. 16-bit images (modes ``I;16`` and ``I``) are scaled by 1/256 first: PIL's
    ``convert`` would clip them, which turns most 16-bit pictures white."""
    if image.mode.startswith("I"):
        image = image.point(lambda v: v / 256)
    return image.convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image -> ``(3, H, W)`` uint8."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def centre_crop_box(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the centred ``size x size`` crop, rounded as torchvision's ``CenterCrop``."""
    return round((height - size) / 2.0), round((width - size) / 2.0)


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``int(size / crop_pct)`` (bicubic), centre-crop ``size``: -> ``(3, size, size)``."""

    size: int
    crop_pct: float = 0.875

    @property
    def draft(self) -> int:
        """JPEGs may be decoded at the smallest DCT scale whose sides stay >= this."""
        return int(self.size / self.crop_pct)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        resize, (w, h) = self.draft, image.size  # torchvision's Resize(int): the long side is truncated
        nw, nh = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        top, left = centre_crop_box(nh, nw, self.size)
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        return to_tensor(image.crop((left, top, left + self.size, top + self.size)))


@dataclass(frozen=True)
class TrainTransform:
    """A random resized crop straight to ``size`` (bicubic): -> ``(3, size, size)``.

    The box comes from `crop_boxes` with ``generator`` (torch's global one when None). The streamed loader seeds
    one per image from (seed, epoch, index), so a crop is the same whichever worker process decodes it.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    draft = None  # a crop may be small: decode at full resolution

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        w, h = image.size
        top, left, ch, cw = crop_boxes(h, w, 1, self.scale, self.ratio, generator)[0].tolist()
        box = (left, top, left + cw, top + ch)
        return to_tensor(image.resize((self.size, self.size), Image.Resampling.BICUBIC, box=box))


class ImageFiles(Dataset):
    """A `FileList` as a dataset: item i is ``(transform(RGB image), label)``, or ``(None, path)`` when the file
    cannot be decoded. Item ``(i, seed)``: the same, with the transform's random draws from a generator seeded
    with ``seed``."""

    def __init__(self, files: FileList, transform: EvalTransform | TrainTransform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files.samples)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, int] | tuple[None, str]:
        index, seed = index if isinstance(index, tuple) else (index, None)
        path, label = self.files.samples[index]
        try:
            with Image.open(path) as image:
                if self.transform.draft:
                    image.draft("RGB", (self.transform.draft, self.transform.draft))
                if seed is None:
                    return self.transform(to_rgb(image)), label
                return self.transform(to_rgb(image), torch.Generator().manual_seed(seed)), label
        # PIL's errors for unreadable / truncated / corrupt / unknown files, and for images too large to decode
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return None, f"{path} ({type(err).__name__}: {err})"


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack the decodable items -> ``(images (B, 3, S, S) uint8, labels (B,), skipped descriptions)``."""
    good = [(image, label) for image, label in items if image is not None]
    skipped = [about for image, about in items if image is None]
    if not good:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), skipped
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), skipped


def warn_skipped(skipped: list[str], total: int) -> None:
    """The one warning about unreadable files (the first one named; the total counted)."""
    warnings.warn(f"skipping unreadable image {skipped[0]}; {total} skipped so far", stacklevel=2)


def decode_all(files: FileList, transform: EvalTransform, workers: int = 0) -> tuple[ImageTensors, int]:
    """Decode every file once into memory (the fast path for small data sets): -> uint8 ``(N, 3, S, S)`` pixels
    and the number of unreadable files skipped."""
    loader = DataLoader(ImageFiles(files, transform), batch_size=256, num_workers=workers, collate_fn=collate)
    images, labels, skipped = [], [], []
    for x, y, bad in loader:
        images.append(x)
        labels.append(y)
        skipped += bad
    if skipped:
        warn_skipped(skipped, len(skipped))
    kept = [x for x in images if len(x)]
    if not kept:
        raise ValueError(f"none of the {len(skipped)} images could be read, e.g. {skipped[0]}; check --data")
    return ImageTensors(torch.cat(kept), torch.cat(labels), files.classes), len(skipped)
