"""MLP on Fashion-MNIST (Debian's dataset-fashion-mnist), or scikit-learn's digits with `:digits`.

    python -m scalelab.run --config experiments/mlp_fashion_mnist.py --workdir runs/mlp
    python -m scalelab.run --config experiments/mlp_fashion_mnist.py:digits --workdir runs/mlp_digits
"""
from scalelab.training import recipes


def get_config(arg: str = 'fashion_mnist'):
    cfg = recipes.image_classification('mlp', arg)
    cfg.model.update(width=256, depth=2, activation='relu')
    cfg.train.steps = 2000 if arg == 'fashion_mnist' else 600
    return cfg
