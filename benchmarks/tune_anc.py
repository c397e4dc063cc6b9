"""Search for a robust default ANC recipe on the Fashion-MNIST reproduction setting (same data, teacher and budget).

Each variant changes a few things against ``anc_adv_samples`` of ``reproduce_fmnist.py`` (the paper's recipe: L2 on
logits, adversarial samples, adversarial weight 1, discriminator Adam lr 2e-4); its name says which. Results are
appended to ``<out>/runs.jsonl`` like the reproduction's, so ``reproduce_fmnist.py --out <out>`` tables them together.
``anc_kl_r1_wadv0.1`` became the package's default recipe (``anc_default`` of the reproduction).

Usage:
  python benchmarks/tune_anc.py --epochs 6 --train-subset 20000 --threads 1 --seeds 0
"""

from __future__ import annotations

import functools
import json
import sys
import time

import reproduce_fmnist as R
import torch

from lightning_advkd import AdversarialDistillation, AdversarialSamples, LinearWarmup, R1Penalty


def variant(teacher, student, args, **overrides) -> AdversarialDistillation:
    options = dict(
        adversarial_weight=1.0,
        data_term="l2",
        student_optimizer=functools.partial(R.student_optimizer, lr=args.lr),
        student_scheduler=functools.partial(R.cosine, epochs=args.epochs),
        student_grad_clip=args.clip,
    )
    options.update(overrides)
    return AdversarialDistillation(teacher, student, **options)


def adam(lr: float):
    return functools.partial(torch.optim.Adam, lr=lr, betas=(0.5, 0.999))


VARIANTS = {
    "anc_wadv0.1": (functools.partial(variant, adversarial_weight=0.1), lambda: [AdversarialSamples()]),
    "anc_wadv0.3": (functools.partial(variant, adversarial_weight=0.3), lambda: [AdversarialSamples()]),
    "anc_dlr5e-5": (functools.partial(variant, discriminator_optimizer=adam(5e-5)), lambda: [AdversarialSamples()]),
    "anc_adaptive": (variant, lambda: [AdversarialSamples(adaptive_threshold=0.7)]),
    "anc_regwarmup_wadv0.3": (
        functools.partial(variant, adversarial_weight=0.3),
        lambda: [AdversarialSamples(weight=1.0, schedule=LinearWarmup(500, start=1.0))],
    ),
    "anc_kl_wadv0.1": (
        functools.partial(variant, adversarial_weight=0.1, data_term="kl"),
        lambda: [AdversarialSamples()],
    ),
    "anc_kl_wadv0.03": (
        functools.partial(variant, adversarial_weight=0.03, data_term="kl"),
        lambda: [AdversarialSamples()],
    ),
    "anc_wadv0.03": (functools.partial(variant, adversarial_weight=0.03), lambda: [AdversarialSamples()]),
    "anc_r1_wadv0.1": (functools.partial(variant, adversarial_weight=0.1), lambda: [R1Penalty(weight=1.0)]),
    "anc_kl_r1_wadv0.1": (
        functools.partial(variant, adversarial_weight=0.1, data_term="kl"),
        lambda: [R1Penalty(weight=1.0)],
    ),
    "anc_kl_r1_wadv0.03": (
        functools.partial(variant, adversarial_weight=0.03, data_term="kl"),
        lambda: [R1Penalty(weight=1.0)],
    ),
    "anc_feat1_wadv0.1": (
        functools.partial(variant, adversarial_weight=0.1, feature_weight=1.0),
        lambda: [AdversarialSamples()],
    ),
    "anc_feat1_wadv1": (
        functools.partial(variant, adversarial_weight=1.0, feature_weight=1.0),
        lambda: [AdversarialSamples()],
    ),
    "anc_kl_feat1_wadv0.1": (
        functools.partial(variant, adversarial_weight=0.1, data_term="kl", feature_weight=1.0),
        lambda: [AdversarialSamples()],
    ),
}


def main(argv: list[str]) -> None:
    chosen = [a for a in argv if a in VARIANTS] or list(VARIANTS)
    args = R.parse_args([a for a in argv if a not in VARIANTS])
    torch.set_num_threads(args.threads)
    R.METHODS.update({name: VARIANTS[name] for name in chosen})
    teacher = R.train_teacher(args)
    train, test = R.plain_datasets(args)
    layers = [t for _, t in R.ATTENTION_PAIRS]
    data = {
        "train": train, "test": test,
        "train_cached": R.TeacherOutputCache(train, teacher, batch_size=512, attention_layers=layers),
        "test_cached": R.TeacherOutputCache(test, teacher, batch_size=512, attention_layers=layers),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    runs_file = args.out / "runs.jsonl"
    for seed in args.seeds:
        for name in chosen:
            start = time.time()
            result = R.run_one(name, seed, teacher, data, args)
            print(f"{name:>24} seed {seed}: last {100 * result['last']:.2f} ({time.time() - start:.0f} s)", flush=True)
            with runs_file.open("a") as handle:
                handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
