"""How long the cached datasets take to hand the loader one batch: read whole vs split into samples and restacked.

Each dataset below serves 128-image Fashion-MNIST-size batches (1 x 28 x 28, a NIN teacher's 192-wide features and
10 logits) from memory, with no training step, so only the read path is timed. Two ways of collating:

  whole      the loader's ``collate_fn`` is ``collate_samples``: a batch read whole is handed over as it was read
  split      ``default_collate``: the batch is split into samples and stacked again (what any other collate does)

Rows: a plain ``TensorDataset`` (the supervised student's loader, for scale), ``TeacherOutputCache``, the
``AugmentedViews`` themselves (crop + flip of each batch) and the ``AugmentedViewCache`` (views plus the teacher's
outputs for them, memory-mapped). Every timing is the median over ``--rounds`` interleaved rounds of one epoch.

Usage:
  python benchmarks/read_path.py          # writes benchmarks/results/read_path.{md,json}
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _results import write_results
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from lightning_advkd import AugmentedViewCache, AugmentedViews, TeacherOutputCache, view_loader
from lightning_advkd.collate import collate_samples
from lightning_advkd.data import TensorImageTransform
from lightning_advkd.models import create_model

RESULTS = Path(__file__).resolve().parent / "results"


def make_data(batches: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    n = batches * batch_size
    pixels = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return pixels, torch.randint(0, 10, (n,), generator=generator)


def loaders(batches: int, batch_size: int, folder: str) -> dict[str, Callable[[], DataLoader]]:
    """Every (dataset, collate) row as a loader factory; the caches are built once, up front."""
    pixels, labels = make_data(batches, batch_size)
    images = (pixels.float() / 255 - 0.5) / 0.25
    torch.manual_seed(0)
    teacher = create_model("nin", num_classes=10, in_chans=1).eval()
    plain = TensorDataset(images, labels)
    outputs = TeacherOutputCache(plain, teacher, batch_size=256)
    transform = TensorImageTransform([0.5], [0.25], padding=2, hflip=True)
    views = AugmentedViews(pixels, labels, transform, num_views=1, seed=0)
    view_cache = AugmentedViewCache(views, teacher, path=folder, batch_size=256)

    def plain_loader(dataset: Dataset, collate: Callable) -> Callable[[], DataLoader]:
        return lambda: DataLoader(dataset, batch_size=batch_size, collate_fn=collate)

    def views_loader(dataset: Dataset, collate: Callable) -> Callable[[], DataLoader]:
        return lambda: view_loader(dataset, batch_size, shuffle=False, collate_fn=collate)

    return {
        "TensorDataset": plain_loader(plain, default_collate),
        "TeacherOutputCache, whole": plain_loader(outputs, collate_samples),
        "TeacherOutputCache, split": plain_loader(outputs, default_collate),
        "AugmentedViews, whole": views_loader(views, collate_samples),
        "AugmentedViews, split": views_loader(views, default_collate),
        "AugmentedViewCache, whole": views_loader(view_cache, collate_samples),
        "AugmentedViewCache, split": views_loader(view_cache, default_collate),
    }


def ms_per_batch(make_loader: Callable[[], DataLoader]) -> float:
    loader = make_loader()
    start = time.perf_counter()
    count = sum(1 for _ in loader)
    return 1000 * (time.perf_counter() - start) / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "read_path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="advkd-read-path-") as folder:
        rows = loaders(args.batches, args.batch_size, folder)
        for make_loader in rows.values():  # warm-up: pages mapped, allocator primed
            ms_per_batch(make_loader)
        samples: dict[str, list[float]] = {name: [] for name in rows}
        for round_index in range(args.rounds):
            order = list(rows) if round_index % 2 == 0 else list(reversed(rows))
            for name in order:
                samples[name].append(ms_per_batch(rows[name]))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    lines = [
        "# Read path: ms per batch handed to the loader", "",
        f"Command: `python benchmarks/read_path.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip()
        + "  ",
        f"Machine: {platform.machine()}, {args.threads} threads, torch {torch.__version__}, batch {args.batch_size}, "
        f"{args.batches} batches per epoch, median of {args.rounds} interleaved rounds.", "",
        "| dataset, collate | ms per batch | split / whole |", "|---|---|---|",
    ]  # fmt: skip
    for name, value in medians.items():
        dataset, _, mode = name.partition(", ")
        ratio = f"{medians[f'{dataset}, split'] / value:.2f}x" if mode == "whole" else ""
        lines.append(f"| {name} | {value:.2f} | {ratio} |")
    write_results(args.out, {"ms_per_batch": medians, "samples": samples}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
