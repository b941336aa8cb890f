"""``segedge train``: train a zoo model (synthetic scenes by default) into the weight cache export reads."""

from __future__ import annotations

import argparse

from segedge.cli.args import DATA_KINDS, positive_float, positive_int, scale_range, size


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a zoo model on the built-in synthetic scenes (cached for export)")
    p.add_argument("--model", required=True, help="zoo model name (see `segedge models`)")
    p.add_argument("--width", type=positive_float, default=1.0, help="channel width multiplier (default 1.0)")
    p.add_argument("--iterations", type=positive_int, help="optimizer steps (default: the cached recipe's)")
    p.add_argument("--batch-size", type=positive_int, help="crops per step (default 4)")
    p.add_argument("--crop", type=size, help="training crop HxW")
    p.add_argument("--scene-size", type=size, help="HxW the training scenes are rendered or resized to (default 512x1024)")
    p.add_argument("--train-scenes", type=positive_int, help="synthetic scenes rendered once to crop from (default 40)")
    p.add_argument("--val-images", type=positive_int, help="validation images scored (default 8)")
    p.add_argument("--data", default="synthetic", help=f"training data: {DATA_KINDS}")
    p.add_argument("--loss", default="ce", help="loss spec, e.g. ce, ce+dice, 0.5*ce+1.0*lovasz, focal:gamma=2, tversky:alpha=0.3,beta=0.7")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--schedule", choices=("poly", "cosine", "plateau"), default="poly", help="learning-rate schedule (plateau steps on val mIoU; needs --eval-every)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default 2.5e-4)")
    p.add_argument("--scale-range", type=scale_range, help="random scale range LOW,HIGH, e.g. 0.75,1.5 (default none)")
    p.add_argument("--jitter", type=float, default=0.0, help="colour jitter strength in [0, 1) (default 0)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N iterations and keep the best weights (default: at the end only)")
    p.add_argument("--resume", help="a training state (*.state.pt, written beside the checkpoint) to continue from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, help="torch threads (default: all cores)")
    p.add_argument("--out", help="checkpoint path (default: the weight cache, where export finds it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segedge.models.registry import get_spec
    from segedge.train.loop import TrainConfig, train
    from segedge.train.losses import build_loss

    spec = get_spec(args.model)
    fields = {"model": spec.name, "width": args.width, "seed": args.seed, "threads": args.threads,
              "optimizer": args.optimizer, "schedule": args.schedule, "loss": args.loss, "data": args.data,
              "jitter": args.jitter, "eval_every": args.eval_every}
    for name in ("iterations", "batch_size", "crop", "lr", "scene_size", "train_scenes", "val_images"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.scale_range is not None:
        fields["scale_range"] = args.scale_range
    config = TrainConfig(**fields)
    build_loss(config.loss, 2)  # a bad --loss spec fails before any data is touched
    ckpt = train(config, out=args.out, progress=not args.quiet, resume=args.resume)
    info = ckpt.train_info
    print(f"checkpoint {ckpt.path}")
    data = "synthetic" if config.data == "synthetic" else config.data
    h, w = info["config"]["scene_size"]
    print(f"val mIoU {100 * info['val_miou']:.2f} on {info['val_images']} {data} val images "
          f"(pixel accuracy {100 * info['val_pixel_accuracy']:.2f}); trained at {h}x{w} in {info['seconds']:.0f} s")
    return 0
