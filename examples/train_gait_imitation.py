"""Train a gait-imitation policy on synthetic walking, then evaluate it on unseen people.

    python examples/train_gait_imitation.py [OUT_DIR] [--steps N] [--config small|paper]

The same as ``mjx-biomech train --out OUT_DIR`` followed by ``mjx-biomech evaluate OUT_DIR``:
a lower-body model with one-axis ankles and a residual pelvis wrench learns, with brax PPO on
MJX, to follow 4 synthetic walkers; the report compares its hip and knee angles, walking speed,
steps and foot strikes with two held-out walkers (``OUT_DIR/evaluation``).
"""

import argparse
from pathlib import Path

from env_registry import evaluate, train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("gait_imitation_run"))
    parser.add_argument("--steps", type=int, default=None, help="environment steps (default: the config's)")
    parser.add_argument("--config", choices=sorted(train.CONFIGS), default="small")
    args = parser.parse_args()

    train_parser = argparse.ArgumentParser()
    train.add_arguments(train_parser)
    train_args = ["--config", args.config, "--out", str(args.out), "--reference", "synthetic:4"]
    if args.steps:
        train_args += ["--steps", str(args.steps)]
    train.run(train_parser.parse_args(train_args))

    eval_parser = argparse.ArgumentParser()
    evaluate.add_arguments(eval_parser)
    return evaluate.run(eval_parser.parse_args([str(args.out), "--reference", "synthetic:2:1000"]))


if __name__ == "__main__":
    raise SystemExit(main())
