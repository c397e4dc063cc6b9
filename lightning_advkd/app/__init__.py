"""The application around the library: the Hydra entry point's building blocks.

``lightning_advkd.train`` composes these: the teacher-checkpoint cache (:mod:`.teachers`), the pair/dataset checks
that run before any training (:mod:`.compat`), the teacher-output datamodule (:mod:`.data`), the feature-projection
plot callback (:mod:`.plots`), the end-of-run summary table (:mod:`.summary`) and the W&B setup (:mod:`.wandb_setup`).
"""
