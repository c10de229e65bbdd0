"""Training loop for every compression method: config, callbacks, checkpoint/resume and DDP."""
from .callbacks import Callback, CallbackConfig
from .checkpoint import seed_everything
from .config import TrainConfig
from .distributed import init_distributed, is_distributed, rank, world_size
from .trainer import Trainer, evaluate

__all__ = ["Callback", "CallbackConfig", "TrainConfig", "Trainer", "evaluate", "init_distributed", "is_distributed",
           "rank", "world_size", "seed_everything"]
