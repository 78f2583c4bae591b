"""CNN on Fashion-MNIST, or scikit-learn's digits with `:digits`.

    python -m scalelab.run --config experiments/cnn_fashion_mnist.py --workdir runs/cnn
"""
from scalelab.training import recipes


def get_config(arg: str = 'fashion_mnist'):
    cfg = recipes.image_classification('cnn', arg)
    cfg.model.update(channels=32, depth=2, kernel_size=3, head_width=128)
    cfg.data.augment = arg == 'fashion_mnist'
    cfg.train.steps = 1500 if arg == 'fashion_mnist' else 600
    return cfg
