"""Training speed and peak memory of ANC against KD, the supervised student and a plain PyTorch ANC loop.

Every method trains the same student on the same in-memory batches, side by side in one invocation: the methods are
interleaved over several rounds (every other round in reverse order) and the median steps/s is reported, so drift of
the machine hits all of them alike. A measurement times whole passes over the batches until at least
``--min-seconds`` are timed, so a fast step (a LeNet-5 step takes ~27 ms) is timed over several passes, not a second.

Methods:
  supervised    the student with labels (SupervisedClassifier, Lightning)
  kd            Hinton KD (KnowledgeDistillation, Lightning)
  anc           ANC as this package runs it (AdversarialDistillation + AdversarialSamples, Lightning)
  anc_cached    the same, reading teacher outputs from the teacher-output cache (no teacher forward per step)
  anc_plain     ANC written as a plain PyTorch loop here, same math, no Lightning: the framework-overhead reference
  anc_two_pass  the reference implementation's variant: a second student forward pass for the adversarial sample
  anc_augmented   ANC on randomly augmented images (crop + flip views, uint8 data in memory), teacher run every step
  anc_view_cache  the same views, teacher outputs read from the augmented-view cache (AugmentedViewCache)

The augmented rows train on uint8 images of the pair's shape through TensorImageTransform (pad-and-crop, flip), the
in-memory small-image path of Fashion-MNIST, CIFAR and SVHN. The view cache is built once per measurement, outside
the timed steps, in a temporary folder; its build time (one view of the measured images, teacher in eval mode with
``--cache-batch-size``) is reported next to the time one epoch of those images saves. Each view costs one teacher pass
over the data, about what one live epoch spends on the teacher, so a cache of K views pays for itself when it is
reused: by K epochs of a run whose teacher pass is slower than the build's, and by every later run (seeds, students,
hyperparameters) with the same teacher, data, recipe, K and seed.

Peak memory is how far the resident set of a fresh subprocess grows while one method builds its networks and trains
(its peak-RSS mark is reset once imports and data are loaded; see ``memory_probe``).

Usage:
  python benchmarks/speed.py                        # both pairs, writes benchmarks/results/speed.{md,json}
  python benchmarks/speed.py --pairs fmnist --steps 20 --rounds 2 --no-memory   # a quick look
  python benchmarks/speed.py --methods supervised anc_augmented anc_view_cache --steps 8 --warmup 2 --rounds 1 \
      --batch-size 16 --no-memory --out /tmp/speed-smoke                         # a smoke run, not a measurement
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from _results import write_results
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_advkd import AdversarialDistillation, AdversarialSamples, AugmentedViewCache, AugmentedViews, view_loader
from lightning_advkd import functional as AF
from lightning_advkd.data import TensorImageTransform
from lightning_advkd.distillation import KnowledgeDistillation
from lightning_advkd.models import create_model
from lightning_advkd.supervised import SupervisedClassifier
from lightning_advkd.teacher_cache import TeacherOutputCache

RESULTS = Path(__file__).parent / "results"
# The networks are untrained and the data random: a small student lr keeps every method finite (L2 on untrained
# teachers' logits diverges at the recipe's 0.05), which the timing does not depend on.
STUDENT_LR = 0.01
CLIP = 5.0  # student gradient-norm clipping of every ANC variant (the reproduction's setting)
MAX_PASSES = 1000  # passes over the measured batches: a bound never reached (--min-seconds stops sooner)
METHODS = ("supervised", "kd", "anc", "anc_cached", "anc_plain", "anc_two_pass", "anc_augmented", "anc_view_cache")


@dataclass(frozen=True)
class Pair:
    teacher: str
    student: str
    input_shape: tuple[int, int, int]
    num_classes: int


PAIRS = {
    "cifar": Pair("resnet56", "resnet20", (3, 32, 32), 100),
    "fmnist": Pair("nin", "lenet5", (1, 28, 28), 10),
}
#: The standard augmentation of each pair's dataset (CIFAR: pad 4 + flip; Fashion-MNIST: pad 2 + flip).
PADDING = {"cifar": 4, "fmnist": 2}


def build_networks(pair: Pair, channels_last: bool) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    in_chans = pair.input_shape[0]
    teacher = create_model(pair.teacher, num_classes=pair.num_classes, in_chans=in_chans).eval()
    student = create_model(pair.student, num_classes=pair.num_classes, in_chans=in_chans)
    # An untrained teacher's BatchNorm statistics (mean 0, variance 1) blow its logits up through deep stacks, and
    # L2 on such logits diverges; a few forward passes in train mode give it realistic statistics.
    with torch.no_grad():
        teacher.train()
        for _ in range(3):
            teacher(torch.randn(64, *pair.input_shape))
        teacher.eval()
    if channels_last:
        teacher, student = teacher.to(memory_format=torch.channels_last), student.to(memory_format=torch.channels_last)
    return teacher, student


def make_dataset(pair: Pair, steps: int, batch_size: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    n = steps * batch_size
    images = torch.randn(n, *pair.input_shape, generator=generator)
    labels = torch.randint(0, pair.num_classes, (n,), generator=generator)
    return TensorDataset(images, labels)


def make_views(pair: Pair, dataset: TensorDataset) -> AugmentedViews:
    """The augmented counterpart of ``dataset``: its images as uint8, one view per image (one measured epoch)."""
    images, labels = dataset.tensors
    pixels = (images.clamp(-2.5, 2.5) * 51 + 127.5).round().to(torch.uint8)
    channels = pair.input_shape[0]
    padding = next(PADDING[name] for name, other in PAIRS.items() if other == pair)
    transform = TensorImageTransform([0.5] * channels, [0.25] * channels, padding=padding, hflip=True)
    return AugmentedViews(pixels, labels, transform, num_views=1, seed=0)


def build_view_cache(
    teacher: nn.Module, views: AugmentedViews, folder: str, batch_size: int
) -> tuple[AugmentedViewCache, float]:
    """The view cache of ``views`` in ``folder``, and the seconds its build took."""
    start = time.perf_counter()
    cache = AugmentedViewCache(views, teacher, path=folder, batch_size=batch_size, device="cpu")
    return cache, time.perf_counter() - start


class StepTimer(Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch; stops after the first pass over the
    batches that ends with at least ``min_seconds`` timed (a fast step is timed over several passes)."""

    def __init__(self, warmup: int, min_seconds: float) -> None:
        self.warmup, self.min_seconds = warmup, min_seconds
        self.start = self.end = 0.0
        self.batches = self.timed_steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.batches == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches > self.warmup:
            self.end = time.perf_counter()
            self.timed_steps = self.batches - self.warmup

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.timed_steps and self.end - self.start >= self.min_seconds:
            trainer.should_stop = True


@dataclass(frozen=True)
class Timing:
    """Batches left untimed at the start, and the least timed seconds of a measurement (whole passes)."""

    warmup: int
    min_seconds: float = 0.0


def lightning_steps_per_second(module: L.LightningModule, loader: DataLoader, timing: Timing, callbacks=()) -> float:
    timer = StepTimer(timing.warmup, timing.min_seconds)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=MAX_PASSES, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, log_every_n_steps=50,
        callbacks=[timer, *callbacks],
    )  # fmt: skip
    trainer.fit(module, loader)
    return timer.timed_steps / (timer.end - timer.start)


def plain_anc_steps_per_second(
    teacher: nn.Module, student: nn.Module, loader: DataLoader, timing: Timing, two_pass: bool
) -> float:
    """ANC in plain PyTorch: the same losses, weights, optimizers and regularizer as ``measure`` gives the module."""
    t_head, s_head = teacher.get_classifier(), student.get_classifier()
    adapter = nn.Linear(s_head.in_features, t_head.in_features)
    discriminator = AdversarialDistillation(teacher, student).discriminator  # same architecture and init scheme
    opt_s = torch.optim.SGD(
        [*student.parameters(), *adapter.parameters()], lr=STUDENT_LR, momentum=0.9, weight_decay=5e-4
    )
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    student.train()

    def step(x: torch.Tensor) -> None:
        with torch.no_grad():
            t_feat = teacher.forward_head(teacher.forward_features(x), pre_logits=True)
            t_logits = t_head(t_feat)
        s_feat = student.forward_head(student.forward_features(x), pre_logits=True)
        s_logits = s_head(s_feat)
        if two_pass:  # the reference implementation runs the backbone again for the perturbed sample
            s_again = student.forward_head(student.forward_features(x), pre_logits=True)
            perturbed = adapter(F.dropout(s_again, 0.5))
        else:
            perturbed = adapter(F.dropout(s_feat, 0.5))
        adapted = adapter(s_feat)
        discriminator.requires_grad_(False)
        data = AF.logit_matching_loss(s_logits, t_logits, "kl", temperature=4.0)  # the module's default data term
        loss_s = 0.1 * AF.generator_loss(discriminator(perturbed)) + data
        opt_s.zero_grad(set_to_none=True)
        loss_s.backward()
        torch.nn.utils.clip_grad_norm_([*student.parameters(), *adapter.parameters()], CLIP)
        opt_s.step()
        discriminator.requires_grad_(True)
        loss_d = (
            AF.discriminator_loss(discriminator(t_feat), discriminator(adapted.detach()))
            + AF.adversarial_samples_penalty(discriminator(perturbed.detach()))
        )  # fmt: skip
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

    batches, start, end = 0, 0.0, 0.0
    for _ in range(MAX_PASSES):  # whole passes until min_seconds are timed
        for x, _ in loader:
            if batches == timing.warmup:
                start = time.perf_counter()
            step(x)
            batches += 1
        end = time.perf_counter()
        if batches > timing.warmup and end - start >= timing.min_seconds:
            break
    return (batches - timing.warmup) / (end - start)


def measure(
    method: str,
    pair: Pair,
    dataset: TensorDataset,
    batch_size: int,
    timing: Timing,
    channels_last: bool,
    cache_batch_size: int = 256,
    build_seconds: list[float] | None = None,
) -> float:
    """Steps/s of ``method``; for ``anc_view_cache`` the cache's build time is appended to ``build_seconds``."""
    teacher, student = build_networks(pair, channels_last)
    loader = DataLoader(dataset, batch_size=batch_size)
    sgd = functools.partial(torch.optim.SGD, lr=STUDENT_LR, momentum=0.9, weight_decay=5e-4)
    if method == "supervised":
        module = SupervisedClassifier(student, pair.num_classes, optimizer=sgd, milestones=())
        return lightning_steps_per_second(module, loader, timing)
    if method == "kd":
        module = KnowledgeDistillation(teacher, student, kd_weight=1.0, optimizer=sgd)
        return lightning_steps_per_second(module, loader, timing)
    if method in ("anc", "anc_cached"):
        if method == "anc_cached":
            loader = DataLoader(TeacherOutputCache(dataset, teacher, batch_size=batch_size), batch_size=batch_size)
        module = AdversarialDistillation(teacher, student, student_optimizer=sgd, student_grad_clip=CLIP)
        return lightning_steps_per_second(module, loader, timing, [AdversarialSamples()])
    if method == "anc_augmented":
        loader = view_loader(make_views(pair, dataset), batch_size, shuffle=False)
        module = AdversarialDistillation(teacher, student, student_optimizer=sgd, student_grad_clip=CLIP)
        return lightning_steps_per_second(module, loader, timing, [AdversarialSamples()])
    if method == "anc_view_cache":
        with tempfile.TemporaryDirectory(prefix="advkd-view-cache-") as folder:
            cache, seconds = build_view_cache(teacher, make_views(pair, dataset), folder, cache_batch_size)
            if build_seconds is not None:
                build_seconds.append(seconds)
            module = AdversarialDistillation(teacher, student, student_optimizer=sgd, student_grad_clip=CLIP)
            return lightning_steps_per_second(module, cache.dataloader(batch_size, shuffle=False), timing,
                                              [AdversarialSamples()])  # fmt: skip
    if method in ("anc_plain", "anc_two_pass"):
        return plain_anc_steps_per_second(teacher, student, loader, timing, two_pass=method == "anc_two_pass")
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def peak_memory_mb(method: str, pair_name: str, args: argparse.Namespace) -> float:
    """Peak resident-memory growth of ``method`` in a fresh subprocess (see :func:`memory_probe`)."""
    command = [
        sys.executable, __file__, "--memory-probe", method, "--pairs", pair_name, "--steps", str(args.steps),
        "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--threads", str(args.threads),
    ]  # fmt: skip
    if args.channels_last:
        command.append("--channels-last")
    # glibc's dynamic mmap threshold keeps freed activations cached in the heap by chance, which made the figures
    # swing by 50-150 MiB between identical runs; a fixed threshold returns large blocks on free, so the peak tracks
    # live memory.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return float(output.strip().splitlines()[-1])


def memory_probe(method: str, args: argparse.Namespace) -> None:
    """Print how far the resident set grows above its level at the start while ``method`` builds and trains.

    The process's peak-RSS mark is reset (Linux ``/proc/self/clear_refs``) after the imports and the data are in
    memory, so the import-time peak of torch and Lightning, the same for every method, cannot mask the training
    peak. A fresh process per method keeps one method's freed-but-cached memory out of the next one's figure.
    """
    pair = PAIRS[args.pairs[0]]
    dataset = make_dataset(pair, args.steps, args.batch_size)
    start = _reset_peak_rss_mb()
    measure(method, pair, dataset, args.batch_size, Timing(args.warmup), args.channels_last)
    print(_proc_status_mb("VmHWM") - start)


def _reset_peak_rss_mb() -> float:
    """Reset the peak-RSS mark to the current RSS and return that RSS in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _proc_status_mb("VmRSS")


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError(f"{field} missing from /proc/self/status: peak memory needs Linux")


def ratios(rates: dict[str, float]) -> dict[str, float]:
    """The targets of the speed issues, as time-per-step or step-rate ratios; those whose methods were measured."""
    wanted = {
        "anc / kd (target <= 1.10)": ("kd", "anc"),
        "anc / anc_plain (target <= 1.05)": ("anc_plain", "anc"),
        "anc_two_pass / anc_plain": ("anc_plain", "anc_two_pass"),
        "anc_cached speed-up over anc": ("anc_cached", "anc"),
        "anc_view_cache step rate / supervised (target >= 0.8)": ("anc_view_cache", "supervised"),
        "anc_view_cache speed-up over anc_augmented": ("anc_view_cache", "anc_augmented"),
    }
    return {name: rates[a] / rates[b] for name, (a, b) in wanted.items() if a in rates and b in rates}


def view_cache_costs(rates: dict[str, float], build_seconds: list[float], images: int, steps: int) -> dict[str, float]:
    """The one-off build of the view cache against what it saves per epoch of the measured images."""
    costs = {"images": images, "build_s_per_view": statistics.median(build_seconds)}
    if "anc_augmented" in rates:
        live, cached = steps / rates["anc_augmented"], steps / rates["anc_view_cache"]
        costs.update(live_epoch_s=live, cached_epoch_s=cached, saving_s_per_epoch=live - cached)
    return costs


def benchmark_pair(name: str, args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    pair = PAIRS[name]
    dataset = make_dataset(pair, args.steps, args.batch_size)
    samples: dict[str, list[float]] = {m: [] for m in args.methods}
    build_seconds: list[float] = []
    timing = Timing(args.warmup, args.min_seconds)
    for round_index in range(args.rounds):
        # Odd rounds run the methods in reverse order, so a method's place in the sequence favours none of them.
        order = args.methods if round_index % 2 == 0 else args.methods[::-1]
        for method in order:
            rate = measure(method, pair, dataset, args.batch_size, timing, args.channels_last,
                           args.cache_batch_size, build_seconds)  # fmt: skip
            samples[method].append(rate)
            log(f"[{name}] round {round_index + 1}/{args.rounds} {method:>13}: {rate:7.2f} steps/s")
    rates = {m: statistics.median(v) for m, v in samples.items()}
    result = {"pair": f"{pair.teacher} -> {pair.student}", "input": list(pair.input_shape), "steps_per_s": rates,
              "samples": samples}  # fmt: skip
    result["ratios"] = ratios(rates)
    if build_seconds:
        result["view_cache"] = view_cache_costs(rates, build_seconds, len(dataset), args.steps)
    if not args.no_memory:
        result["peak_memory_mb"] = {m: peak_memory_mb(m, name, args) for m in args.methods}
    return result


def to_markdown(results: dict, args: argparse.Namespace) -> str:
    lines = [
        "# Speed and memory (CPU)", "",
        f"Command: `{' '.join(['python', 'benchmarks/speed.py', *args.argv])}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, batch {args.batch_size}, passes of {args.steps} batches ({args.warmup} warm-up) "
        f"repeated until at least {args.min_seconds:g} s are timed, median of "
        f"{args.rounds} interleaved rounds, channels_last={args.channels_last}.", "",
    ]  # fmt: skip
    for name, result in results.items():
        lines += [f"## {name}: {result['pair']}, input {tuple(result['input'])}", ""]
        memory = result.get("peak_memory_mb")
        lines += ["| method | steps/s | images/s | peak memory growth (MiB) |", "|---|---|---|---|"]
        for method, rate in result["steps_per_s"].items():
            mem = f"{memory[method]:.0f}" if memory else "-"
            lines.append(f"| {method} | {rate:.2f} | {rate * args.batch_size:.0f} | {mem} |")
        if result.get("ratios"):
            lines += ["", "| ratio | value |", "|---|---|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in result["ratios"].items()]
        costs = result.get("view_cache")
        if costs:
            build = f"{costs['build_s_per_view']:.2f} s to build one view of the {costs['images']} measured images"
            lines += ["", f"View cache, one-off: {build} (teacher batch {args.cache_batch_size}, median)."]
            if "saving_s_per_epoch" in costs:
                lines[-1] += (
                    f" Per epoch of those images: {costs['live_epoch_s']:.2f} s live (anc_augmented), "
                    f"{costs['cached_epoch_s']:.2f} s cached, saving {costs['saving_s_per_epoch']:.2f} s."
                )
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=30, help="batches per measurement, warm-up included")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=5.0,
        help="time whole passes over the batches until at least this long (fast steps: several)",
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 resists a shared CPU better)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--cache-batch-size", type=int, default=256, help="teacher batch of the view-cache build")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe is not None:
        memory_probe(args.memory_probe, args)
        return
    results = {name: benchmark_pair(name, args, print) for name in args.pairs}
    write_results(args.out, results, to_markdown(results, args))


if __name__ == "__main__":
    main()
