"""Command line: ``python -m train`` (train or fine-tune), ``python -m train pretrain``,
``python -m train evaluate``, ``python -m train probes``, ``python -m train download``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from train.config import PRESETS, PRETRAIN_PRESETS  # plain dataclasses: cheap to import

DEFAULT_DATA = os.environ.get("IMDB_DATA", "data/aclImdb_v1.tar.gz")
COMMANDS = ("evaluate", "download", "pretrain", "probes")


def _device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but PyTorch sees no CUDA device; use --device cpu")
    return torch.device(name)


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description=(
        "Train the IMDB sentiment LSTM (v1: --preset full), or fine-tune a pretrained encoder "
        "(v2: --preset v2 --pretrained RUN/last.pt). Other commands: `python -m train pretrain -h`, "
        "`python -m train evaluate -h`, `python -m train probes -h`, `python -m train download -h`."))
    parser.add_argument("--data", default=DEFAULT_DATA, help="aclImdb folder or .tar.gz (env IMDB_DATA)")
    parser.add_argument("--out", required=True, type=Path, help="run folder for checkpoints, metrics, plots")
    parser.add_argument("--preset", default="full", choices=sorted(PRESETS), help="hyperparameter preset")
    parser.add_argument("--pretrained", type=Path,
                        help="fine-tune from this `python -m train pretrain` last.pt (its tokenizer and encoder)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    parser.add_argument("--epochs", type=int, dest="max_epochs", help="maximum epochs")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: usable CPUs)")
    parser.add_argument("--time-budget", "--time-budget-minutes", type=float, dest="time_budget_minutes",
                        help="minutes; stop before an epoch would overrun this")
    parser.add_argument("--tokenizer", type=Path, help="reuse this tokenizer.json instead of training one")
    parser.add_argument("--train-limit", type=int, help="use a stratified subset of N training reviews")
    parser.add_argument("--test-limit", type=int,
                        help="evaluate the final model on a stratified subset of N test reviews (0: all)")
    parser.add_argument("--lr-decay-per-layer", type=float,
                        help="discriminative learning rates: each lower layer group gets lr / this (1: one lr)")
    parser.add_argument("--unfreeze-every-steps", type=int,
                        help="gradual unfreezing: one more layer group every N steps (0: all trainable)")
    parser.add_argument("--adversarial-epsilon", type=float,
                        help="L2 norm of the adversarial embedding perturbation per review (0: off)")
    parser.add_argument("--compose-fraction", type=float,
                        help="add composed reviews (memory / verdict-at-the-end augmentation, train/compose.py), "
                             "as a fraction of the training reviews (0: off); needs --compose-teacher")
    parser.add_argument("--compose-teacher", help="model-repository version folder that scores the mined sentences, "
                                                  "e.g. models/imdb-lstm/3")
    return parser


def pretrain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train pretrain", description=(
        "Language-model pretraining of the embedding + LSTM on train (minus validation) + unlabelled "
        "reviews; needs the full archive aclImdb_v1.tar.gz. Fine-tune with "
        "`python -m train --preset v2 --pretrained OUT/last.pt`."))
    parser.add_argument("--data", default=DEFAULT_DATA, help="aclImdb folder or .tar.gz (env IMDB_DATA)")
    parser.add_argument("--out", required=True, type=Path, help="run folder (last.pt, metrics, perplexity plot)")
    parser.add_argument("--preset", default="full", choices=sorted(PRETRAIN_PRESETS), help="hyperparameter preset")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    parser.add_argument("--epochs", type=int, dest="max_epochs", help="passes over the text")
    parser.add_argument("--max-steps", type=int, help="optimizer steps the schedule decays over (and stops at)")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: usable CPUs)")
    parser.add_argument("--time-budget", "--time-budget-minutes", type=float, dest="time_budget_minutes",
                        help="minutes; save and stop before a batch would overrun this")
    parser.add_argument("--unsup-limit", type=int, help="use N unlabelled reviews (default: the preset's)")
    return parser


def probes_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train probes", description=(
        "Accuracy on the behavioural probe sets (memory over neutral filler, verdict at the end, "
        "negation, one-sentence reviews) of a model version folder or a training checkpoint."))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a model-repository version folder, e.g. models/imdb-lstm/1")
    source.add_argument("--checkpoint", type=Path, help="a training checkpoint (best.pt)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"], help="with --model")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime / PyTorch threads")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser


def evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train evaluate", description="Score a checkpoint on a split.")
    parser.add_argument("--checkpoint", required=True, type=Path, help="best.pt or last.pt")
    parser.add_argument("--data", default=DEFAULT_DATA, help="aclImdb folder or .tar.gz (env IMDB_DATA)")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--limit", type=int, default=0, help="stratified subset of N reviews (0: all)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return parser


def download_parser() -> argparse.ArgumentParser:
    from train.download import OFFICIAL_SHA256, OFFICIAL_URL

    parser = argparse.ArgumentParser(prog="python -m train download",
                                     description="Fetch the official aclImdb archive, verified by sha256.")
    parser.add_argument("--out", type=Path, default=Path("data/aclImdb_v1.tar.gz"), help="where to save it")
    parser.add_argument("--url", default=OFFICIAL_URL, help="archive URL (a mirror)")
    parser.add_argument("--sha256", default=OFFICIAL_SHA256, help="expected sha256 of the archive")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else "train"
    if command == "download":
        from train.download import DownloadError, download

        args = download_parser().parse_args(argv[1:])
        try:
            path = download(args.url, args.out, args.sha256)
        except DownloadError as exc:
            sys.exit(f"error: {exc}")
        print(f"saved {path}")
        return 0

    if command == "probes":
        from train.probes import format_report, run_probes

        args = probes_parser().parse_args(argv[1:])
        try:
            report = run_probes(args.model, args.checkpoint, args.precision, args.threads)
        except (FileNotFoundError, ValueError) as exc:
            sys.exit(f"error: {exc}")
        print(format_report(report))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0

    from train.data import DatasetError
    from train.pipeline import run_evaluation, run_training

    try:
        if command == "pretrain":
            from train.config import pretrain_preset
            from train.pretrain import run_pretraining

            args = pretrain_parser().parse_args(argv[1:])
            pconfig = pretrain_preset(args.preset, seed=args.seed, max_epochs=args.max_epochs,
                                      max_steps=args.max_steps, threads=args.threads,
                                      time_budget_minutes=args.time_budget_minutes, unsup_limit=args.unsup_limit)
            print(f"configuration: {pconfig}")
            result = run_pretraining(Path(args.data), args.out, pconfig, _device(args.device), args.resume)
            print(f"stopped ({result['stopped']}) after {result['steps']} steps, {result['tokens'] / 1e6:.2f}M tokens, "
                  f"{result['train_wall_time_s'] / 60:.1f} min; validation perplexity "
                  f"{result['final_val_perplexity']}; outputs in {args.out}")
            return 0
        if command == "evaluate":
            args = evaluate_parser().parse_args(argv[1:])
            metrics = run_evaluation(args.checkpoint, Path(args.data), args.split, args.limit, _device(args.device))
            print(json.dumps(metrics, indent=2))
            return 0
        from train.config import preset

        args = train_parser().parse_args(argv)
        config = preset(args.preset, seed=args.seed, max_epochs=args.max_epochs, threads=args.threads,
                        time_budget_minutes=args.time_budget_minutes, train_limit=args.train_limit,
                        lr_decay_per_layer=args.lr_decay_per_layer, unfreeze_every_steps=args.unfreeze_every_steps,
                        adversarial_epsilon=args.adversarial_epsilon, test_limit=args.test_limit,
                        compose_fraction=args.compose_fraction, compose_teacher=args.compose_teacher)
        print(f"configuration: {config}")
        metrics = run_training(Path(args.data), args.out, config, _device(args.device), args.resume,
                               args.tokenizer, args.pretrained)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    summary = {k: metrics[k] for k in ("validation", "test") if k in metrics}
    print(json.dumps({split: {m: v for m, v in s.items() if m != "confusion_matrix"} for split, s in summary.items()},
                     indent=2))
    print(f"training wall time {metrics['train_wall_time_s'] / 60:.1f} min; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
