"""Training-loop settings shared by every config: `from configs.common.train import train`.

Every key at its default, from the declarations of the components that read them (their types,
allowed values and meanings: docs/settings.md). A config changes what it needs::

    train.max_iter = 450
    train.checkpoint.period = 150
"""

from pgtrain.engine import train_defaults

__config__ = True

train = train_defaults()
