"""The Hydra configuration groups of the app, shipped with the package (search path ``pkg://lightning_advkd.conf``)."""
