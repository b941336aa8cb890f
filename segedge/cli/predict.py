"""``segedge predict``: masks for images with an exported artifact, as the application will run it."""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from segedge.cli.args import log, positive_int
from segedge.core.errors import SegedgeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="class masks for images with an exported artifact (palette PNGs, optional overlays)",
        description="Run an artifact as the application will (segedge.Predictor): any image size, masks back at the "
        "image's size, written as palette PNGs named after the images; prints end-to-end FPS split into "
        "pre-processing, inference and post-processing.",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="an artifact directory (export/<model>/<hash>) or a model file in one")
    p.add_argument("--source", required=True, help="an image, a folder of images, or a glob such as 'frames/*.jpg'")
    p.add_argument("--out", required=True, help="folder for the masks (created)")
    p.add_argument("--precision", help="fp32, fp16 or int8 (default: int8 where exported, else fp32)")
    p.add_argument("--backend", default="onnxruntime", help="the runtime (default onnxruntime)")
    p.add_argument("--overlay", action="store_true", help="also write image/mask blends (<name>.overlay.png)")
    p.add_argument("--threads", type=positive_int, help="inference threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def sources(text: str) -> list[Path]:
    path = Path(text)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        found = [path]
    else:
        found = sorted(Path(p) for p in glob.glob(text) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise SegedgeError(f"--source {text} names no image ({', '.join(IMAGE_SUFFIXES)}): give a file, a folder or a glob")
    return found


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from segedge.flows.predict import Predictor
    from segedge.flows.report import palette

    images = sources(args.source)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SegedgeError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    with Predictor(args.artifact, backend=args.backend, precision=args.precision, threads=args.threads) as predictor:
        colours = palette(max(len(predictor.class_names), 2))
        for path in tqdm(images, desc=f"predict {predictor.precision}", unit="img", disable=args.quiet):
            try:
                image = np.asarray(Image.open(path).convert("RGB"))
            except OSError as exc:
                raise SegedgeError(f"cannot read image {path}: {exc}") from None
            mask = predictor(image)
            _save_mask(mask, colours, predictor.class_names, out / f"{path.stem}.png")
            if args.overlay:
                blend = (0.5 * image + 0.5 * colours[mask]).astype(np.uint8)
                Image.fromarray(blend).save(out / f"{path.stem}.overlay.png")
        log(predictor.timings.describe())
    print(f"{len(images)} masks in {out}")
    return 0


def _save_mask(mask, colours, class_names, path: Path) -> None:
    from PIL import Image, PngImagePlugin

    from segedge.core.artifacts import atomic_path

    image = Image.fromarray(mask, mode="P")
    image.putpalette(colours.reshape(-1).tolist() + [0] * (768 - colours.size))
    info = PngImagePlugin.PngInfo()
    info.add_text("classes", ",".join(class_names))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
