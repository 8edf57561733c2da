"""Executors run a list of cells; the local one in-process, the SLURM one through submitit."""
