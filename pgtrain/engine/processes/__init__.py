"""Processes: launching them (spawn, torchrun, several machines), preemption and stalls, Slurm."""
