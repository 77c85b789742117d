"""A model with its training and test data, by name: what the command line and the recipes run on."""
from . import MODELS, datasets, models


def load_problem(name, data_dir=None, seed=0, epochs=60, train_limit=None, test_limit=None):
    """``(model, train, test)`` for a model name of :data:`MODELS`; ``digits`` trains a DigitsMLP in a few
    seconds (``epochs``), the others load pretrained checkpoints and data from ``data_dir``."""
    if name == "digits":
        train, test = datasets.load_digits_data(seed=seed)
        return models.train_digits_mlp(train, epochs=epochs, seed=seed), train, test
    if name == "mlpnet":
        model, load = models.load_mlpnet(data_dir), datasets.load_mnist
    elif name == "resnet20":
        model, load = models.load_resnet20(data_dir), datasets.load_cifar10
    else:
        raise ValueError(f"model must be one of {MODELS}, got {name!r}")
    return model, load("train", data_dir, limit=train_limit), load("test", data_dir, limit=test_limit)
