"""The application around the library: the Hydra entry point's building blocks.

``lightning_advkd.train`` composes these: the configs and building objects from them (:mod:`.config`), how the job
was launched (:mod:`.launch`), the pair/dataset/method checks that run before any training (:mod:`.compat`), the
teacher's source (:mod:`.teacher_source`) and its cache (:mod:`.teachers`), the supervised baseline built like every
method (:mod:`.methods`), the run's loggers (:mod:`.loggers`, :mod:`.wandb_setup`) and callbacks
(:mod:`.callback_list`, :mod:`.plots`), the teacher-output datamodule (:mod:`.data`), and what a run leaves behind
(:mod:`.results`, :mod:`.summary`).
"""
