#!/usr/bin/env python3
"""Python baselines for `cargo xtask bench data`: how fast the PyTorch reference's
data path decodes Omniglot and applies random affine distortions on this machine.

- decode: the reference's single-process loop, `Image.open(path).convert('L')` over
  every PNG of images_background/ and images_evaluation/, kept in memory.
- augment: torchvision's `RandomAffine(15)` + `ToTensor` on 105x105 images.

Prints one JSON line. Set up once:
    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch torchvision pillow
"""
import argparse, glob, json, os, time

from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/omniglot")
    ap.add_argument("--augment-images", type=int, default=4000)
    a = ap.parse_args()
    paths = []
    for s in ("images_background", "images_evaluation"):
        paths += sorted(glob.glob(os.path.join(a.data, s, "*", "*", "*.png")))
    if not paths:
        raise SystemExit(f"no PNGs under {a.data}: fetch the data set first")

    for p in paths[:2000]:  # warm the page cache, as the Rust side does
        Image.open(p).convert("L")
    t = time.perf_counter()
    images = [Image.open(p).convert("L") for p in paths]
    decode = len(images) / (time.perf_counter() - t)

    import torch
    import torchvision.transforms as T

    tf = T.Compose([T.RandomAffine(15), T.ToTensor()])
    sample = images[: a.augment_images]
    for im in sample[:200]:
        tf(im)
    t = time.perf_counter()
    for im in sample:
        tf(im)
    augment = len(sample) / (time.perf_counter() - t)
    print(json.dumps({
        "impl": f"python PIL {Image.__version__} / torchvision (torch {torch.__version__})",
        "images": len(images),
        "decode_images_per_s": round(decode, 1),
        "augment_images_per_s": round(augment, 1),
    }))


if __name__ == "__main__":
    main()
