"""shakespeare_gpt at the common CPU reference size: 4 layers, 4 heads, width 128, context 64, batch 12, 2000 steps."""

import ml_collections

from experiments import shakespeare_gpt

build = shakespeare_gpt.build


def get_config() -> ml_collections.ConfigDict:
    config = shakespeare_gpt.get_config()
    config.data.batch_size = 12
    config.train.max_steps = 2000
    config.train.eval_every_steps = 250
    # nanoGPT's 1e-3 ended at 1.875 or 1.881 depending on the data order: a coin toss around the 1.88 benchmark 4
    # measures time to. 2e-3 passes 1.88 by step 1500 (BUILD_NOTES.md, issue 8).
    config.optim.learning_rate = 2e-3
    return config
