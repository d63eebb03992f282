"""Image data for training: sources, CPU decoding, device-side augmentation, batches.

The split of work: the CPU decodes files and crops them (`images`), everything else (flip,
RandAugment, colour jitter, normalisation, random erasing, mixup / cutmix, label smoothing) runs on
whole batches on the training device (`augment`). Small data sets are decoded once and kept on the
device (`loader`), so a GPU never waits for JPEG decoding. No torchvision anywhere.

    sources     named sources (synthetic, imagenette, cifar10, imagenet, imagenet100), archives, checksums,
                the ImageNet subset builder
    synthetic   motif images where local structure decides the class (the embedded default)
    images      PIL decoding, train / eval transforms, skipping unreadable files
    augment     batched augmentation, DeiT's recipe
    loader      `build_data(source, img_size, batch_size, ...) -> Data(train, val, classes)`
"""

from vitlocal.data.augment import IMAGENET_MEAN, IMAGENET_STD, Augment, soft_cross_entropy
from vitlocal.data.loader import Batches, Data, build_data, load_split
from vitlocal.data.sources import IMAGENET100, FileList, ImageTensors, imagenet_subset, parse_source
from vitlocal.data.synthetic import synthetic_images

__all__ = [
    "Augment",
    "Batches",
    "Data",
    "build_data",
    "load_split",
    "FileList",
    "ImageTensors",
    "IMAGENET100",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_subset",
    "parse_source",
    "soft_cross_entropy",
    "synthetic_images",
]
