"""The training loop (`Trainer`, `AMPTrainer`) and the hook interface it calls (`HookBase`)."""
