"""Where and how the model runs: the device, one process, DDP or FSDP2, and compilation."""
