"""Data: sources, decoding, the transforms (each against an independent computation), batching.

Independent computations: ``F.interpolate`` for resizing, PIL's ``ImageOps`` / ``ImageEnhance`` for the
RandAugment operations, ``F.cross_entropy(label_smoothing=)`` for smoothed targets, plain slicing and
arithmetic for crops, flips, mixup and cutmix.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageEnhance, ImageOps

from tests.util import randn
from vitlocal.data import IMAGENET100, build_data, imagenet_subset, parse_source, sources, synthetic_images
from vitlocal.data import augment as A
from vitlocal.data.images import EvalTransform, centre_crop_box, to_rgb, to_tensor
from vitlocal.data.synthetic import class_motifs

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def random_image(h: int, w: int, seed: int) -> np.ndarray:
    """A ``(h, w, 3)`` uint8 image with smooth structure and noise (so that every op has something to do)."""
    g = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xs[..., None] / 3.0 + np.arange(3)) * np.cos(ys[..., None] / 4.0)
    return np.clip(base + g.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


def as_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (20, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_image(size[1], size[0], seed)).save(path, quality=90)


def make_folder(root: Path, classes: int = 2, per_class: int = 3) -> Path:
    """A tiny ImageNet-layout folder ``root/{train,val}/<class>/*.JPEG``."""
    for split in ("train", "val"):
        for c in range(classes):
            for i in range(per_class):
                write_jpeg(root / split / f"n0{c}" / f"{i}.JPEG", seed=100 * c + i)
    return root


# ---------------------------------------------------------------- geometric transforms
@given(
    h=st.integers(4, 20),
    w=st.integers(4, 20),
    size=st.integers(2, 24),
    seed=st.integers(0, 2**16),
)
def test_resized_crop_matches_interpolate_of_the_crop(h: int, w: int, size: int, seed: int) -> None:
    rng = random.Random(seed)
    top, left = rng.randrange(h), rng.randrange(w)
    ch, cw = rng.randint(1, h - top), rng.randint(1, w - left)
    x = randn(2, 3, h, w, seed=seed)
    boxes = torch.tensor([[top, left, ch, cw], [0, 0, h, w]])
    out = A.resized_crop(x, boxes, size)
    for b, (t, l, bh, bw) in enumerate(boxes.tolist()):
        expected = F.interpolate(x[b : b + 1, :, t : t + bh, l : l + bw], size=(size, size), mode="bilinear")
        torch.testing.assert_close(out[b : b + 1], expected)


@given(h=st.integers(8, 300), w=st.integers(8, 300), seed=st.integers(0, 2**16))
def test_crop_boxes_fit_and_follow_scale_and_ratio(h: int, w: int, seed: int) -> None:
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = A.crop_boxes(h, w, 64, scale, ratio, torch.Generator().manual_seed(seed))
    top, left, bh, bw = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    assert (bh >= 1).all() and (bw >= 1).all()
    # rounding to whole pixels moves area and aspect by at most half a pixel per side
    area = (bh * bw).double() / (h * w)
    slack = (bh + bw + 1).double() / (h * w)
    centre_fallback = (bh == min(h, round(w / ratio[0]))) | (bw == min(w, round(h * ratio[1])))
    ok = ((area >= scale[0] - slack) & (area <= scale[1] + slack)) | centre_fallback
    assert ok.all()


def test_hflip_probability_one_and_zero() -> None:
    x = randn(3, 2, 4, 5, seed=0)
    torch.testing.assert_close(A.hflip(x, 1.0), x.flip(-1))
    torch.testing.assert_close(A.hflip(x, 0.0), x)


def test_eval_transform_is_resize_then_centred_crop() -> None:
    size, crop_pct = 16, 0.8  # resize the shorter side to 20
    image = random_image(37, 50, seed=1)
    out = EvalTransform(size, crop_pct)(Image.fromarray(image))
    # independent: torch's antialiased bicubic resize (which follows PIL's) to 20 x int(20 * 50 / 37) = 20 x 27
    resized = F.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None], size=(20, 27), mode="bicubic", antialias=True
    )[0]
    top, left = (20 - size) // 2, round((27 - size) / 2)  # 2 and 6 (5.5 rounds to the even 6, as torchvision)
    expected = resized[:, top : top + size, left : left + size]
    assert out.shape == (3, size, size) and out.dtype == torch.uint8
    assert (out.int() - expected.int()).abs().max() <= 1


@given(h=st.integers(4, 40), w=st.integers(4, 40), size=st.integers(1, 40))
def test_centre_crop_box_leaves_equal_margins(h: int, w: int, size: int) -> None:
    size = min(size, h, w)
    top, left = centre_crop_box(h, w, size)
    assert abs(top - (h - size - top)) <= 1 and abs(left - (w - size - left)) <= 1
    assert 0 <= top <= h - size and 0 <= left <= w - size


def test_normalize_matches_manual_arithmetic() -> None:
    x = torch.randint(0, 256, (2, 3, 4, 4)).float()
    mean, std = torch.tensor(A.IMAGENET_MEAN), torch.tensor(A.IMAGENET_STD)
    expected = torch.stack([(x[:, c] / 255 - mean[c]) / std[c] for c in range(3)], 1)
    torch.testing.assert_close(A.normalize(x), expected)


# ---------------------------------------------------------------- RandAugment operations against PIL
def pil_reference(name: str, image: Image.Image, m: float, sign: float) -> Image.Image:
    """timm's op at magnitude ``m`` (0..10) with PIL, the parameters derived as timm's ``*_increasing`` levels."""
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name == "Invert":
        return ImageOps.invert(image)
    if name == "Posterize":
        mask = ~(2 ** (8 - (4 - int(m / 10 * 4))) - 1)  # PIL's lut; Pillow >= 10 refuses timm's 0 bits at m = 10
        return image.point([i & mask for i in range(256)] * 3)
    if name == "Solarize":
        return ImageOps.solarize(image, 256 - int(m / 10 * 256))
    if name == "SolarizeAdd":
        add = int(m / 10 * 110)
        return image.point([min(255, i + add) if i < 128 else i for i in range(256)] * 3)
    factor = 1 + sign * m / 10 * 0.9
    return getattr(ImageEnhance, name)(image).enhance(factor)


@pytest.mark.parametrize(
    "name",
    [
        "AutoContrast",
        "Equalize",
        "Invert",
        "Posterize",
        "Solarize",
        "SolarizeAdd",
        "Color",
        "Contrast",
        "Brightness",
        "Sharpness",
    ],
)
@pytest.mark.parametrize("m", [2.0, 9.0, 10.0])
def test_colour_ops_match_pil(name: str, m: float) -> None:
    image = random_image(12, 17, seed=int(m))
    for sign in (1.0, -1.0):
        ours = A.apply_op(name, as_batch(image), torch.tensor([m / 10]), torch.tensor([sign]), torch.zeros(3))
        theirs = as_batch(np.array(pil_reference(name, Image.fromarray(image), m, sign)))
        assert (ours - theirs).abs().max() <= 1, name


def test_equalize_on_a_single_value_image_is_identity_as_pil() -> None:
    image = np.full((5, 6, 3), 77, dtype=np.uint8)
    out = A.apply_op("Equalize", as_batch(image), torch.tensor([0.5]), torch.tensor([1.0]), torch.zeros(3))
    torch.testing.assert_close(out, as_batch(np.array(ImageOps.equalize(Image.fromarray(image)))))


def test_translate_moves_by_whole_pixels_and_fills() -> None:
    image = random_image(10, 20, seed=3)
    fill = torch.tensor([1.0, 2.0, 3.0])
    # level 2/9 of 0.45 x 20 px = 2 px: the output at x reads the input at x + 2, as PIL's AFFINE (1, 0, 2, 0, 1, 0)
    out = A.apply_op("TranslateX", as_batch(image), torch.tensor([2 / 9]), torch.tensor([1.0]), fill)
    expected = as_batch(image).roll(-2, dims=-1)
    expected[..., -2:] = fill.view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)


def test_rotate_by_90_degrees_matches_pil() -> None:
    image = random_image(9, 9, seed=4)
    # level 3 = 90 degrees (beyond RandAugment's range, where PIL's result is an exact transpose)
    out = A.apply_op("Rotate", as_batch(image), torch.tensor([3.0]), torch.tensor([1.0]), torch.zeros(3))
    torch.testing.assert_close(out, as_batch(np.array(Image.fromarray(image).rotate(90))))


@pytest.mark.parametrize(
    ("name", "level", "sign", "coefficients"),
    [
        ("ShearX", 2 / 3, 1.0, (1, 0.2, 0, 0, 1, 0)),  # timm: shear 0.3 m / 10, PIL AFFINE (1, v, 0, 0, 1, 0)
        ("ShearY", 1.0, -1.0, (1, 0, 0, -0.3, 1, 0)),
        ("TranslateY", 0.5, 1.0, (1, 0, 0, 0, 1, 0.225 * 20)),  # a fraction 0.45 m / 10 of the height
    ],
)
def test_shear_and_translate_match_pil_where_the_source_is_inside(name, level, sign, coefficients) -> None:
    image = random_image(20, 20, seed=7)
    ours = A.apply_op(name, as_batch(image), torch.tensor([level]), torch.tensor([sign]), torch.zeros(3))
    pil = Image.fromarray(image).transform((20, 20), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    a, b, c, d, e, f = coefficients
    ys, xs = torch.meshgrid(torch.arange(20.0) + 0.5, torch.arange(20.0) + 0.5, indexing="ij")
    sx, sy = a * xs + b * ys + c, d * xs + e * ys + f  # where each output pixel reads, in PIL's convention
    inside = (sx > 1) & (sx < 19) & (sy > 1) & (sy < 19)  # away from the border, where fills differ
    assert inside.sum() > 100
    assert (ours - as_batch(np.array(pil)))[..., inside].abs().max() <= 1


def test_rotate_matches_pil_at_any_angle() -> None:
    image = random_image(20, 20, seed=8)
    for degrees in (17.0, -23.0):
        ours = A.apply_op(
            "Rotate",
            as_batch(image),
            torch.tensor([abs(degrees) / 30]),
            torch.sign(torch.tensor([degrees])),
            torch.zeros(3),
        )
        theirs = as_batch(np.array(Image.fromarray(image).rotate(degrees, resample=Image.Resampling.BILINEAR)))
        assert (ours - theirs)[..., 4:-4, 4:-4].abs().max() <= 1


def test_rand_augment_keeps_range_shape_and_is_seeded() -> None:
    x = as_batch(random_image(16, 16, seed=5)).repeat(8, 1, 1, 1)
    a = A.rand_augment(x, generator=torch.Generator().manual_seed(0))
    b = A.rand_augment(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 255
    assert not torch.equal(a, x)  # 16 draws at p = 0.5: something changed


# ---------------------------------------------------------------- erasing, mixing, smoothing
def test_random_erasing_replaces_one_box_and_nothing_else() -> None:
    x = torch.full((16, 3, 20, 24), 100.0)  # noise is N(0, 1): never 100
    out = A.random_erasing(x, p=1.0, generator=torch.Generator().manual_seed(0))
    for image in out:
        erased = (image != 100).all(0)
        rows, cols = erased.any(1).nonzero()[:, 0], erased.any(0).nonzero()[:, 0]
        assert len(rows) and len(cols)
        box = erased[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and erased.sum() == box.numel()  # a full rectangle
        assert 0.02 * 480 - 24 <= box.numel() <= 480 / 3 + 24  # area fraction in [0.02, 1/3], +- rounding
    torch.testing.assert_close(A.random_erasing(x, p=0.0), x)


@given(seed=st.integers(0, 2**16), num_classes=st.integers(2, 20), eps=st.floats(0.0, 0.5))
def test_label_smoothing_matches_cross_entropy(seed: int, num_classes: int, eps: float) -> None:
    logits = randn(6, num_classes, seed=seed)
    y = torch.randint(0, num_classes, (6,), generator=torch.Generator().manual_seed(seed))
    ours = A.soft_cross_entropy(logits, A.smooth_one_hot(y, num_classes, eps))
    torch.testing.assert_close(ours, F.cross_entropy(logits.float(), y, label_smoothing=eps))


@given(seed=st.integers(0, 2**16))
def test_mixup_is_the_convex_combination_with_its_lambda(seed: int) -> None:
    x, y = randn(4, 3, 5, 5, seed=seed), torch.tensor([0, 1, 2, 1])
    t = A.smooth_one_hot(y, 3, 0.1)
    out, target, lam = A.mixup_cutmix(x, t, mixup=0.8, cutmix=0.0, switch_prob=0.5, rng=random.Random(seed))
    assert 0 <= lam <= 1
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[[3, 2, 1, 0]])
    torch.testing.assert_close(target, lam * t + (1 - lam) * t[[3, 2, 1, 0]])


@given(seed=st.integers(0, 2**16))
def test_cutmix_lambda_is_the_kept_area(seed: int) -> None:
    x = randn(4, 3, 12, 10, seed=seed)  # all pixels differ from the reversed batch's
    t = A.smooth_one_hot(torch.tensor([0, 1, 2, 3]), 4)
    out, target, lam = A.mixup_cutmix(x, t, mixup=0.0, cutmix=1.0, switch_prob=0.5, rng=random.Random(seed))
    pasted = out != x
    torch.testing.assert_close(out[pasted], x.flip(0)[pasted])
    assert lam == pytest.approx(1 - pasted[0, 0].float().mean().item())
    torch.testing.assert_close(target, lam * t + (1 - lam) * t.flip(0))


# ---------------------------------------------------------------- synthetic data
def test_synthetic_is_deterministic_balanced_and_split() -> None:
    a, b = synthetic_images(60, 32, seed=3), synthetic_images(60, 32, seed=3)
    val = synthetic_images(60, 32, split="val", seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, val.images)
    assert a.images.shape == (60, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.bincount(a.labels).tolist() == [6] * 10


def test_class_motifs_are_distinct_symmetric_with_equal_ink() -> None:
    m = class_motifs(10, 5, seed=0)
    assert len(torch.unique(m.flatten(1), dim=0)) == 10
    assert torch.equal(m, m.flip(-1))  # a flip keeps the class
    assert (m.flatten(1).sum(1) == 2 * 5 + 2).all()


def test_synthetic_rejects_tiny_images() -> None:
    with pytest.raises(ValueError, match="img_size >= 16"):
        synthetic_images(4, 8)


# ---------------------------------------------------------------- sources, archives, subsets
def test_parse_source() -> None:
    assert parse_source("synthetic") == ("synthetic", None)
    assert parse_source("imagenette:/data/x.tgz") == ("imagenette", "/data/x.tgz")
    with pytest.raises(ValueError, match="neither a source name"):
        parse_source("imagenot")
    with pytest.raises(ValueError, match="needs the ImageNet folder"):
        parse_source("imagenet")


def test_folder_and_archive_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITLOCAL_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "set" / "tiny")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="tiny")
    for source in (str(root), str(archive)):  # a folder, and an archive with one top folder
        data = build_data(source, 8, 2, in_memory=True, workers=0)
        assert data.classes == ["n00", "n01"] and data.train.num_images == 6
        x, y = next(iter(data.val))
        assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32 and y.tolist() == [0, 0]
    assert len(list((tmp_path / "cache" / "extracted").iterdir())) == 1  # extracted once, no leftovers


def test_corrupt_jpeg_is_skipped_with_one_warning(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "set", classes=2, per_class=4)
    good = (root / "train" / "n00" / "0.JPEG").read_bytes()
    (root / "train" / "n00" / "1.JPEG").write_bytes(good[: len(good) // 3])  # truncated
    (root / "train" / "n01" / "2.JPEG").write_bytes(b"not an image at all")
    data = build_data(str(root), 8, 8, augment=A.Augment(), in_memory=False, workers=0)
    with pytest.warns(UserWarning, match="skipping unreadable image") as caught:
        for epoch in (0, 1):  # counted per epoch, warned about once
            data.train.set_epoch(epoch)
            batches = list(data.train)
            assert data.train.skipped == 2 and sum(len(x) for x, _ in batches) == 6
    assert len(caught) == 1
    with pytest.warns(UserWarning, match="2 skipped"):
        memory = build_data(str(root), 8, 8, in_memory=True, workers=0)
    assert memory.train.num_images == 6 and memory.train.skipped == 2  # the same count on both paths


def test_sixteen_bit_images_are_scaled_to_eight_bits_not_clipped() -> None:
    pixels = np.array([[0, 255, 256, 40000, 65535]], dtype=np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(pixels)))
    assert rgb.shape == (1, 5, 3) and rgb[0, :, 0].tolist() == [0, 0, 1, 156, 255]


def tar_of(folder: Path, path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def test_the_extraction_cache_is_keyed_on_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two archives of the same name and size but other bytes get their own cache entries."""
    monkeypatch.setenv("VITLOCAL_CACHE", str(tmp_path / "cache"))
    first = sources.extract(tar_of(make_folder(tmp_path / "a" / "set"), tmp_path / "set.tar.gz"))
    second_archive = tar_of(make_folder(tmp_path / "b" / "set"), tmp_path / "b.tar.gz")
    (tmp_path / "set.tar.gz").unlink()
    second = sources.extract(second_archive.rename(tmp_path / "set.tar.gz"))
    assert first != second and first.name.startswith("set-") and second.is_dir()
    assert sources.extract(tmp_path / "set.tar.gz") == second  # and the same archive is extracted once


@pytest.mark.parametrize("has_data_filter", [True, False])
def test_unsafe_archive_members_are_refused_on_every_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_data_filter: bool
) -> None:
    """Without ``tarfile.data_filter`` (Python < 3.10.12) the members are still checked, by us."""
    monkeypatch.setenv("VITLOCAL_CACHE", str(tmp_path / "cache"))
    if not has_data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    root = make_folder(tmp_path / "set")
    assert (sources.extract(tar_of(root, tmp_path / "good.tar.gz")) / "set" / "train" / "n00").is_dir()
    for name, kind, link in [("../evil", tarfile.REGTYPE, ""), ("set/l", tarfile.SYMTYPE, "/etc")]:
        path = tmp_path / "bad.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tar.addfile(info, io.BytesIO(b""))
        with pytest.raises(ValueError, match="refusing to extract"):
            sources.extract(path)
    assert not (tmp_path / "evil").exists()
    assert len(list((tmp_path / "cache" / "extracted").iterdir())) == 1  # the good one; no half-extracted folder


def test_imagenet_subset_is_deterministic_and_builds_a_link_tree(tmp_path: Path) -> None:
    for c in range(5):
        for i in range(6):
            path = tmp_path / "imagenet" / "train" / f"n0{c}" / f"img{i}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    a = imagenet_subset(tmp_path / "imagenet", classes=3, per_class=2, seed=1, out=tmp_path / "sub")
    b = imagenet_subset(tmp_path / "imagenet", classes=3, per_class=2, seed=1)
    assert len(a.samples) == 6 and a.classes == b.classes and len(set(a.classes)) == 3
    assert [Path(p).name for p, _ in a.samples] == [Path(p).name for p, _ in b.samples]
    assert all(Path(p).is_symlink() and str(p).startswith(str(tmp_path / "sub")) for p, _ in a.samples)
    with pytest.raises(FileNotFoundError, match="lacks 100 of the requested classes"):
        imagenet_subset(tmp_path / "imagenet")


def test_imagenet100_list() -> None:
    assert len(IMAGENET100) == len(set(IMAGENET100)) == 100
    index = SHARED_DATA / "imagenet_class_index.json"
    if index.exists():
        wnids = {wnid for wnid, _ in json.loads(index.read_text()).values()}
        assert set(IMAGENET100) <= wnids


def test_cifar10_binary_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITLOCAL_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    g = np.random.default_rng(0)
    records = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records[name] = g.integers(0, 256, (2, 3073), dtype=np.uint8)
        records[name][:, 0] %= 10
        records[name].tofile(folder / name)
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    test = sources.read_cifar10_binary(tmp_path, "val")
    rec = records["test_batch.bin"][1]
    assert test.labels.tolist() == records["test_batch.bin"][:, 0].tolist()
    assert test.images[1, 0, 0, :4].tolist() == rec[1:5].tolist()  # red plane first, row-major
    assert test.images[1, 2, 31, 31].item() == rec[3072] and len(test.classes) == 10
    assert len(sources.read_cifar10_binary(tmp_path, "train").labels) == 10


def test_download_checks_sha256_and_fails_clearly_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITLOCAL_CACHE", str(tmp_path))
    item = sources.Download("https://example.invalid/data.tgz", "0" * 64, 5)

    def offline(url: str, path: Path) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(sources.urllib.request, "urlretrieve", offline)
    with pytest.raises(FileNotFoundError, match="offline"):
        sources.download(item)
    monkeypatch.setattr(sources.urllib.request, "urlretrieve", lambda url, path: Path(path).write_bytes(b"12345"))
    with pytest.raises(OSError, match="does not match"):
        sources.download(item)
    assert not list(tmp_path.glob("data.tgz*"))  # nothing half-downloaded is kept
    (tmp_path / "data.tgz").write_bytes(b"54321")  # a cached copy of the right size but other bytes
    with pytest.raises(OSError, match="does not match"):  # is not trusted: downloaded (here: refused) again
        sources.download(item)
    good = sources.Download(item.url, hashlib.sha256(b"12345").hexdigest(), 5)
    assert sources.download(good).read_bytes() == b"12345"
    monkeypatch.setattr(sources.urllib.request, "urlretrieve", offline)
    assert sources.download(good).read_bytes() == b"12345"  # a cached copy with the published checksum is used


# ---------------------------------------------------------------- batches
def test_processes_split_one_global_batch() -> None:
    """What W processes with batch B see is exactly what one process with batch W x B sees."""
    plain = A.Augment(crop_scale=None, hflip=0.0, randaugment=None, color_jitter=0.0, mixup=0.0, cutmix=0.0, erase=0.0)
    kwargs = dict(augment=plain)
    one = build_data("synthetic", 16, 8, limit=(64, 20), **kwargs)
    ranks = [build_data("synthetic", 16, 4, rank=r, world=2, limit=(64, 20), **kwargs) for r in range(2)]
    for epoch in (0, 1):
        for batches in [one.train] + [d.train for d in ranks]:
            batches.set_epoch(epoch)
        for (x, _), (x0, _), (x1, _) in zip(one.train, ranks[0].train, ranks[1].train, strict=True):
            torch.testing.assert_close(x, torch.cat([x0, x1]))
    val = torch.cat([y for _, y in ranks[0].val] + [y for _, y in ranks[1].val])
    assert sorted(val.tolist()) == sorted(torch.cat([y for _, y in one.val]).tolist())


def test_in_memory_training_batches_are_augmented_and_soft() -> None:
    data = build_data("synthetic", 16, 8, augment=A.Augment(), limit=(32, 8))
    x, target = next(iter(data.train))
    assert x.shape == (8, 3, 16, 16) and target.shape == (8, 10)
    torch.testing.assert_close(target.sum(1), torch.ones(8))


def test_to_tensor_layout() -> None:
    image = random_image(3, 4, seed=0)
    assert torch.equal(to_tensor(Image.fromarray(image)), torch.from_numpy(image).permute(2, 0, 1))


def test_rand_augment_equals_each_image_augmented_on_its_own() -> None:
    """The branch-free batch (every op on every image, kept by ``torch.where``) equals a naive loop that applies
    each image's drawn ops to that image alone, with the same random draws."""
    x = torch.randint(0, 256, (12, 3, 16, 16)).float()
    out = A.rand_augment(x, layers=3, generator=torch.Generator().manual_seed(1))
    g, fill = torch.Generator().manual_seed(1), torch.tensor([round(255 * m) for m in A.IMAGENET_MEAN]).float()
    expected = x.clone()
    for _ in range(3):  # the draws, in rand_augment's order
        op = torch.randint(len(A.RANDAUGMENT_OPS), (12,), generator=g)
        apply = torch.rand(12, generator=g) < 0.5
        level = (9.0 + 0.5 * torch.randn(12, generator=g)).clamp(0, 10) / 10
        sign = torch.where(torch.rand(12, generator=g) > 0.5, -1.0, 1.0)
        for i in range(12):
            if apply[i]:
                name = A.RANDAUGMENT_OPS[op[i]]
                expected[i : i + 1] = A.apply_op(name, expected[i : i + 1], level[i : i + 1], sign[i : i + 1], fill)
    assert apply.any() and not apply.all()  # both kinds of image occur
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


# ---------------------------------------------------------------- the loader's epoch order, workers
def test_in_memory_epoch_order_is_a_seeded_permutation_moved_once() -> None:
    """Each rank's indices for an epoch: one device tensor, a function of (seed, epoch) only; the ranks' rows of
    every global batch are disjoint, and the batches are those indices in order."""
    splits = [build_data("synthetic", 16, 4, augment=A.Augment(), world=2, rank=r, limit=(50, 8)) for r in (0, 1)]
    trains = [s.train for s in splits]
    orders = [t._order() for t in trains]
    assert all(o.device == t.device and len(o) == 48 // 2 for o, t in zip(orders, trains, strict=True))
    torch.testing.assert_close(trains[0]._order(), orders[0], rtol=0, atol=0)  # drawn again: the same
    both = torch.cat(orders)
    assert len(set(both.tolist())) == 48 and both.max() < 50  # six global batches of 2 x 4 distinct images
    trains[0].set_epoch(1)
    assert not torch.equal(trains[0]._order(), orders[0])
    trains[0].set_epoch(0)
    assert len(trains[0]) == 6 and len(splits[0].val) == 1  # 8 val images: 4 per rank, one batch
    plain = build_data("synthetic", 16, 4, world=2, rank=0, limit=(50, 8)).train  # no augmentation
    for (x, _), index in zip(plain, plain._order().split(4), strict=True):
        torch.testing.assert_close(x, A.normalize(plain.images[index].float()), rtol=0, atol=0)


def test_streamed_crops_do_not_depend_on_the_workers_and_the_workers_persist(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "set", classes=2, per_class=4)
    crop_only = A.Augment(hflip=0.0, randaugment=None, color_jitter=0.0, mixup=0.0, cutmix=0.0, erase=0.0)
    epochs = {}
    for workers in (0, 2):
        data = build_data(str(root), 8, 4, augment=crop_only, in_memory=False, workers=workers)
        assert data.train.loader.persistent_workers == (workers > 0) == data.val.loader.persistent_workers
        for epoch in (0, 1):
            data.train.set_epoch(epoch)
            epochs[workers, epoch] = torch.cat([x for x, _ in data.train])
    torch.testing.assert_close(epochs[2, 0], epochs[0, 0], rtol=0, atol=0)
    torch.testing.assert_close(epochs[2, 1], epochs[0, 1], rtol=0, atol=0)
    assert not torch.equal(epochs[0, 0], epochs[0, 1])


def test_augmentation_copies_its_constants_to_the_device_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host-to-GPU copy waits for the GPU: DeiT's full augmentation makes its constants (grey weights, affine
    scale, fill colour, mean and std) in the first batches only, not in every step."""
    A._constant.cache_clear()
    made: list[int] = []
    original = torch.tensor

    def counted(*args, **kwargs):
        made.append(1)
        return original(*args, **kwargs)

    data = build_data("synthetic", 16, 8, augment=A.Augment(), limit=(64, 8))
    list(data.train)  # the first epoch makes them
    monkeypatch.setattr(torch, "tensor", counted)
    data.train.set_epoch(1)
    assert len(list(data.train)) == 8 and made == []
