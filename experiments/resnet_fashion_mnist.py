"""ResNet (basic blocks, batch norm) on Fashion-MNIST, or scikit-learn's digits with `:digits`.

    python -m scalelab.run --config experiments/resnet_fashion_mnist.py --workdir runs/resnet
    ... --config.model.norm=groupnorm   # or layernorm, none
"""
from scalelab.training import recipes


def get_config(arg: str = 'fashion_mnist'):
    cfg = recipes.image_classification('resnet', arg)
    cfg.model.update(width=16, stages=3, blocks_per_stage=2, norm='batchnorm')
    cfg.data.augment = arg == 'fashion_mnist'
    cfg.train.update(global_batch=64, steps=1200 if arg == 'fashion_mnist' else 600)
    return cfg
