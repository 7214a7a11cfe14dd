"""Sweeps: a grid of runs -> the list of commands -> local runs or a SLURM job array.

``spec``: the spec language (stages, flag checks against the toolkit's parser, grid expansion,
commands); ``slurm``: job-array, single-job and submit scripts from ``scripts/slurm/*.tmpl``;
``local``: the local process pool. ``scripts/sweep.py`` is the command line over them.
"""
