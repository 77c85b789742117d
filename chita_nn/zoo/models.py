"""Networks of the CHITA experiments (MLPNet on MNIST, ResNet20 on CIFAR-10, a small digits MLP),
checkpoint loaders, a quick trainer for the digits MLP, and evaluation."""
import logging
import re

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.batches import as_tensors
from ..core.errors import first_line
from .datasets import resolve_data_dir

logger = logging.getLogger(__name__)

MLPNET_CHECKPOINT = "checkpoints/mnist_25_epoch_93.97.ckpt"
RESNET20_CHECKPOINT = "checkpoints/resnet20_cifar10.pth.tar"


class MLPNet(nn.Module):
    """784-40-20-10 ReLU MLP without biases; returns logits (cross-entropy on logits = NLL on log_softmax)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 40, bias=False)
        self.fc2 = nn.Linear(40, 20, bias=False)
        self.fc3 = nn.Linear(20, 10, bias=False)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut (identity, or 1x1 conv stride 2 + BN), then ReLU."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet20(nn.Module):
    """ResNet20 for 32x32 CIFAR-10 images (3 stages x 3 BasicBlocks of width 16/32/64), returns logits."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, stride=1)
        self.layer2 = self._stage(16, 32, stride=2)
        self.layer3 = self._stage(32, 64, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(in_planes, planes, stride, blocks=3):
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class DigitsMLP(nn.Module):
    """ReLU MLP for the 64-feature sklearn digits (10 classes); layers ``fc1 .. fc{len(hidden)+1}``.

    The default ``hidden=(64, 32)`` has 6,464 weights (plus 106 biases).
    """

    def __init__(self, hidden=(64, 32), in_features=64, num_classes=10):
        super().__init__()
        sizes = [in_features, *hidden, num_classes]
        self.layer_names = [f"fc{i + 1}" for i in range(len(sizes) - 1)]
        for name, fan_in, fan_out in zip(self.layer_names, sizes[:-1], sizes[1:]):
            self.add_module(name, nn.Linear(fan_in, fan_out))

    def forward(self, x):
        x = torch.flatten(x, 1)
        *hidden, last = self.layer_names
        for name in hidden:
            x = F.relu(getattr(self, name)(x))
        return getattr(self, last)(x)


def _load_checkpoint(data_dir, relative_path, safe_globals=()):
    path = resolve_data_dir(data_dir) / relative_path
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 -- torch.load fails in many ways on a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({first_line(exc)})") from None


def load_mlpnet(data_dir=None):
    """MLPNet with the CHITA MNIST checkpoint weights (93.97% test accuracy), in eval mode.

    Checkpoint keys ``module.fcN._layer.weight`` map to ``fcN.weight``; the (all-ones) masks are dropped.
    """
    checkpoint = _load_checkpoint(data_dir, MLPNET_CHECKPOINT,
                                  (torch.optim.SGD, torch.optim.lr_scheduler.ExponentialLR))
    state = {re.sub(r"^module\.", "", key).replace("._layer.", "."): value
             for key, value in checkpoint["model_state_dict"].items() if not key.endswith("_mask")}
    model = MLPNet()
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_resnet20(data_dir=None):
    """ResNet20 with the CHITA CIFAR-10 checkpoint weights (91.43% test accuracy with mean=std=0.5 inputs),
    in eval mode."""
    checkpoint = _load_checkpoint(data_dir, RESNET20_CHECKPOINT)
    state = {re.sub(r"^module\.", "", key): value for key, value in checkpoint["state_dict"].items()}
    model = ResNet20()
    model.load_state_dict(state, strict=True)
    return model.eval()


def train_digits_mlp(train, epochs=60, seed=0, lr=3e-3, batch_size=128, weight_decay=1e-4, hidden=(64, 32),
                     progress=False):
    """Train a :class:`DigitsMLP` with minibatch Adam on cross-entropy; deterministic for a given ``seed``.

    The global torch RNG state is left untouched. Returns the model in eval mode.
    """
    X, y = as_tensors(train, "train")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsMLP(hidden=hidden, in_features=X[0].numel())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in tqdm(range(epochs), desc="train digits MLP", disable=not progress):
        for batch in torch.randperm(len(X), generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(X[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()
