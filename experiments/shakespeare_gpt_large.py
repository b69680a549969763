"""shakespeare_gpt at the well-known GPU size: 6 layers, 6 heads, width 384, context 256, batch 64, dropout 0.2."""

import ml_collections

from experiments import shakespeare_gpt

build = shakespeare_gpt.build


def get_config() -> ml_collections.ConfigDict:
    config = shakespeare_gpt.get_config()
    config.model.update(context=256, num_layers=6, num_heads=6, width=384, dropout=0.2)
    config.data.batch_size = 64
    config.data.eval_batch_size = 64
    config.data.validation_windows = 200 * 64
    config.train.max_steps = 5000
    config.train.eval_every_steps = 500
    config.checkpoint.every_steps = 1000
    config.optim.update(learning_rate=1e-3, warmup_steps=100)
    return config
