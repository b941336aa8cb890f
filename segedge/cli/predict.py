"""``segedge predict``: masks for images with an exported artifact, as the application will run it."""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from segedge.backends.registry import backend_names
from segedge.cli.args import log, positive_int
from segedge.core.errors import SegedgeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="class masks for images with an exported artifact (palette PNGs, optional overlays)",
        description="Run an artifact as the application will (segedge.Predictor): any image size, masks back at the "
        "image's size, written as palette PNGs named after the images; prints end-to-end FPS split into "
        "pre-processing, inference and post-processing.",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="an artifact directory (export/<model>/<hash>) or a model file in one")
    p.add_argument("--source", required=True, help="an image, a folder of images, a glob such as 'frames/*.jpg', or a "
                   f"video ({', '.join(VIDEO_SUFFIXES)}: written back with the masks blended and the FPS drawn)")
    p.add_argument("--out", required=True, help="folder for the masks (created)")
    p.add_argument("--precision", help="fp32, fp16 or int8 (default: int8 where exported, else fp32)")
    p.add_argument("--backend", default=None, choices=backend_names(),
                   help="the runtime (default: a ship bundle's, else onnxruntime; openvino runs NNCF's INT8 graph where exported)")
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


def outputs(images: list[Path], out: Path, overlay: bool) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    """(each image's mask path and overlay path or None, notes for the log). A mask is ``<stem>.png``, or
    ``<file name>.png`` where images share a stem (a.png and a.jpg would otherwise write one file). Refused before
    anything is written: a mask that would replace an input (--out the --source folder), and two images that would
    still write one file (x.png from two folders of a glob)."""
    from collections import Counter

    stems = Counter(p.stem for p in images)
    inputs = {}
    for path in images:
        stat = path.stat()
        inputs[(stat.st_dev, stat.st_ino)] = path
    planned: list[tuple[Path, Path | None]] = []
    writer: dict[Path, Path] = {}
    for path in images:
        name = path.stem if stems[path.stem] == 1 else path.name
        mask, blend = out / f"{name}.png", (out / f"{name}.overlay.png" if overlay else None)
        for target in (mask, blend) if blend else (mask,):
            key = target.resolve()
            if key in writer:
                raise SegedgeError(f"{writer[key]} and {path} would both be written to {target}; predict them into "
                                   "different --out folders")
            writer[key] = path
            try:
                stat = target.stat()
            except OSError:
                continue
            if (stat.st_dev, stat.st_ino) in inputs:
                raise SegedgeError(f"--out {out} holds the images: the mask of {path} would replace the image "
                                   f"{inputs[(stat.st_dev, stat.st_ino)]}; give --out a folder of its own")
        planned.append((mask, blend))
    notes = []
    for stem in sorted(s for s, n in stems.items() if n > 1):
        names = sorted(p.name for p in images if p.stem == stem)
        notes.append(f"{' and '.join(names)} share the name {stem}: their masks are named after the whole file name "
                     f"({', '.join(f'{n}.png' for n in names)})")
    return planned, notes


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from segedge.data.datasets import read_rgb
    from segedge.flows.predict import Predictor
    from segedge.flows.report import palette

    out = Path(args.out)
    if Path(args.source).suffix.lower() in VIDEO_SUFFIXES:
        return _video(args, Path(args.source), out)
    images = sources(args.source)
    planned, notes = outputs(images, out, args.overlay)
    for note in notes:
        log(note)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SegedgeError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    with Predictor(args.artifact, backend=args.backend, precision=args.precision, threads=args.threads) as predictor:
        colours = palette(max(len(predictor.class_names), 2))
        for path, (mask_path, overlay_path) in tqdm(list(zip(images, planned)), desc=f"predict {predictor.precision}",
                                                    unit="img", disable=args.quiet):
            image = read_rgb(path)  # the datasets' reader: 16-bit images scaled by their range, as eval scores them
            mask = predictor(image)
            _save_mask(mask, colours, predictor.class_names, mask_path)
            if overlay_path is not None:
                blend = (0.5 * image + 0.5 * colours[mask]).astype(np.uint8)
                Image.fromarray(blend).save(overlay_path)
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


def _video(args: argparse.Namespace, source: Path, out: Path) -> int:
    """Video in, video out: each frame's mask blended over it, with the running end-to-end FPS drawn."""
    try:
        import cv2
    except ImportError:
        raise SegedgeError("video needs OpenCV, a segedge dependency missing here: pip install opencv-python-headless") from None
    import numpy as np
    from tqdm import tqdm

    from segedge.flows.predict import Predictor
    from segedge.flows.report import palette

    if not source.is_file():
        raise SegedgeError(f"video {source} does not exist")
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise SegedgeError(f"OpenCV cannot open {source} as a video")
    fps_in = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    target = out / f"{source.stem}.masks.avi"
    if target.exists() and target.samefile(source):
        raise SegedgeError(f"the video with masks would replace its source {source}; give --out another folder")
    out.mkdir(parents=True, exist_ok=True)
    frames = 0
    import os

    tmp = out / f".{source.stem}.{os.getpid()}.partial.avi"  # OpenCV picks the container by the suffix
    with Predictor(args.artifact, backend=args.backend, precision=args.precision, threads=args.threads) as predictor:
        colours = palette(max(len(predictor.class_names), 2))[:, ::-1]  # BGR, as OpenCV writes
        writer = None
        try:
            with tqdm(total=total, desc=f"predict {predictor.precision}", unit="frame", disable=args.quiet) as bar:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    mask = predictor(frame, bgr=True)
                    blend = (0.5 * frame + 0.5 * colours[mask]).astype(np.uint8)
                    cv2.putText(blend, f"{predictor.timings.fps:.1f} FPS", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                                (255, 255, 255), 2, cv2.LINE_AA)
                    if writer is None:
                        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps_in,
                                                 (frame.shape[1], frame.shape[0]))
                    writer.write(blend)
                    frames += 1
                    bar.update(1)
        except BaseException:  # interrupted or failed: no half-written video is left behind
            if writer is not None:
                writer.release()
                writer = None
            tmp.unlink(missing_ok=True)
            raise
        finally:
            capture.release()
            if writer is not None:
                writer.release()
            if frames == 0 or not tmp.is_file() or tmp.stat().st_size == 0:
                tmp.unlink(missing_ok=True)
        if frames == 0:
            raise SegedgeError(f"{source} holds no frame OpenCV can read")
        if not tmp.is_file():
            raise SegedgeError(f"OpenCV wrote no video to {target}")
        os.replace(tmp, target)
        log(predictor.timings.describe())
    print(f"{frames} frames with masks in {target}")
    return 0
