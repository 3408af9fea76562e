"""Choosing configurations: `sweep` (grids × override sets × seeds, reconciled with the run
folders), `tune` (successive halving, hyperband and population-based training over a `space`,
with random, grid or TPE `samplers`), the manifest both keep, and the one writer of their
selection (`best.yaml`, `selection.json`). Running the runs is `launch`'s; this package turns
runs into `launch.Job`s and keeps their records."""
