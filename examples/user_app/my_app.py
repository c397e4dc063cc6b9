"""A user's own Hydra app that composes lightning_advkd's config groups and adds a pair of its own.

The package's configs are found through the search path ``pkg://lightning_advkd.conf`` (see ``conf/my_app.yaml``),
so this works with the package installed from a wheel, without a checkout:

    python my_app.py                                   # the package's main job, on this app's pair
    python my_app.py method=kd debug=fast_dev_run      # every group of the package can be chosen as usual
    python my_app.py pair=resnet14_lenet5              # the package's pairs sit beside this app's
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import lightning_advkd
from lightning_advkd.train import optimized_value, run


@hydra.main(version_base="1.3", config_path="conf", config_name="my_app")
def main(cfg: DictConfig) -> float | None:
    print(f"lightning_advkd from {lightning_advkd.__file__}; pair {cfg.pair.name}", flush=True)
    return optimized_value(cfg, run(cfg))


if __name__ == "__main__":
    main()
