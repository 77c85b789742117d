"""ImageNet architectures for the at-scale experiments, defined here (no torchvision dependency).

- :class:`MobileNetV1` (Howard et al. 2017, width 1.0): a 3x3 stride-2 stem, then 13 depthwise-separable
  blocks (3x3 depthwise conv-BN-ReLU, 1x1 pointwise conv-BN-ReLU), global average pool, fc 1024 -> 1000;
  4,231,976 parameters.
- :func:`resnet50`: torchvision's ResNet-50 layout (bottleneck v1.5, stride on the 3x3 conv, projection
  shortcuts, stages of 3/4/6/3 blocks, fc 2048 -> 1000); 25,557,032 parameters.
"""
from torch import nn

# (output channels, stride) of MobileNetV1's depthwise-separable blocks
_MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                     (512, 1), (512, 1), (1024, 2), (1024, 1))


def _conv_bn_relu(in_ch, out_ch, kernel, stride, groups=1):
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class MobileNetV1(nn.Module):
    """MobileNetV1 for 224x224 ImageNet inputs (any input of at least 32x32 works: the pool is adaptive)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, in_ch = [_conv_bn_relu(3, 32, 3, 2)], 32
        for out_ch, stride in _MOBILENET_BLOCKS:
            layers += [_conv_bn_relu(in_ch, in_ch, 3, stride, groups=in_ch), _conv_bn_relu(in_ch, out_ch, 1, 1)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class Bottleneck(nn.Module):
    """1x1 reduce - 3x3 (stride here, as in torchvision) - 1x1 expand (x4), each with BN; shortcut; ReLU."""

    expansion = 4

    def __init__(self, in_ch, width, stride=1):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ImageNet ResNet with bottleneck blocks: 7x7/2 stem, 3x3/2 max pool, four stages, pool, fc."""

    def __init__(self, stage_blocks=(3, 4, 6, 3), num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for i, (blocks, width) in enumerate(zip(stage_blocks, (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(in_ch, width, stride)]
            in_ch = width * Bottleneck.expansion
            stage += [Bottleneck(in_ch, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet50(num_classes=1000):
    """torchvision's ResNet-50 architecture (randomly initialised)."""
    return ResNet((3, 4, 6, 3), num_classes)
