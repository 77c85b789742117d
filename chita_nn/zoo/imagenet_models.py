"""ImageNet architectures for the at-scale experiments, defined here (no torchvision dependency).

- :class:`MobileNetV1` (Howard et al. 2017, width 1.0): a 3x3 stride-2 stem, then 13 depthwise-separable
  blocks (3x3 depthwise conv-BN-ReLU, 1x1 pointwise conv-BN-ReLU), global average pool, fc 1024 -> 1000;
  4,231,976 parameters.
- :func:`resnet50`: torchvision's ResNet-50 layout (bottleneck v1.5, stride on the 3x3 conv, projection
  shortcuts, stages of 3/4/6/3 blocks, fc 2048 -> 1000); 25,557,032 parameters.
- :func:`resnet18`: torchvision's ResNet-18 layout (basic blocks of two 3x3 convs, stages of 2/2/2/2 blocks,
  1x1 stride-2 projection shortcuts, fc 512 -> 1000); 11,689,512 parameters.
- :class:`MobileNetV3Small` (Howard et al. 2019, torchvision's ``mobilenet_v3_small`` layout): a 3x3 stride-2
  stem (16 channels, hardswish), 11 inverted-residual blocks (1x1 expansion, k x k depthwise, optional
  squeeze-excitation, 1x1 linear projection; identity shortcut where shapes allow), a 1x1 conv to 576
  channels, pool, Linear 576 -> 1024, hardswish, dropout 0.2, Linear 1024 -> classes; 2,542,856 parameters.
"""
from torch import nn

from .models import BasicBlock

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
    """ImageNet ResNet: 7x7/2 stem, 3x3/2 max pool, four stages of ``block`` (:class:`Bottleneck`, or
    :class:`chita_nn.zoo.models.BasicBlock` whose output width is its ``planes``), pool, fc."""

    def __init__(self, stage_blocks=(3, 4, 6, 3), num_classes=1000, block=Bottleneck):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for i, (blocks, width) in enumerate(zip(stage_blocks, (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            stage = [block(in_ch, width, stride)]
            in_ch = width * getattr(block, "expansion", 1)
            stage += [block(in_ch, width) for _ in range(blocks - 1)]
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


def resnet18(num_classes=1000):
    """torchvision's ResNet-18 architecture (randomly initialised)."""
    return ResNet((2, 2, 2, 2), num_classes, block=BasicBlock)


def _divisible(v, divisor=8):
    """``v`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``, never 10% below ``v``)."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


def _conv_bn(in_ch, out_ch, kernel, stride=1, groups=1, act=None):
    """Conv (no bias) - BatchNorm (eps 1e-3, momentum 0.01 as torchvision's MobileNetV3) - optional activation."""
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_ch, eps=0.001, momentum=0.01)]
    return nn.Sequential(*layers, *([act(inplace=True)] if act is not None else []))


class SqueezeExcitation(nn.Module):
    """``x · hardsigmoid(fc2(relu(fc1(pool(x)))))`` with 1x1 convs (biases) ``C -> squeeze -> C``."""

    def __init__(self, channels, squeeze):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expand (skipped when ``expanded == in_ch``) - k x k depthwise (stride) - SE -
    1x1 project (no activation), plus the input when ``stride == 1`` and ``in_ch == out_ch``."""

    def __init__(self, in_ch, kernel, expanded, out_ch, se, act, stride):
        super().__init__()
        layers = [] if expanded == in_ch else [_conv_bn(in_ch, expanded, 1, act=act)]
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if se:
            layers.append(SqueezeExcitation(expanded, _divisible(expanded // 4)))
        layers.append(_conv_bn(expanded, out_ch, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x):
        out = self.block(x)
        return out + x if self.residual else out


# (in, kernel, expanded, out, squeeze-excitation, activation, stride) of MobileNetV3-small's blocks
_MOBILENET_V3_SMALL = ((16, 3, 16, 16, True, nn.ReLU, 2), (16, 3, 72, 24, False, nn.ReLU, 2),
                       (24, 3, 88, 24, False, nn.ReLU, 1), (24, 5, 96, 40, True, nn.Hardswish, 2),
                       (40, 5, 240, 40, True, nn.Hardswish, 1), (40, 5, 240, 40, True, nn.Hardswish, 1),
                       (40, 5, 120, 48, True, nn.Hardswish, 1), (48, 5, 144, 48, True, nn.Hardswish, 1),
                       (48, 5, 288, 96, True, nn.Hardswish, 2), (96, 5, 576, 96, True, nn.Hardswish, 1),
                       (96, 5, 576, 96, True, nn.Hardswish, 1))


class MobileNetV3Small(nn.Module):
    """MobileNetV3-small (torchvision's layout, see the module docstring); any input of at least 32x32."""

    def __init__(self, num_classes=1000, dropout=0.2):
        super().__init__()
        layers = [_conv_bn(3, 16, 3, 2, act=nn.Hardswish)]
        layers += [InvertedResidual(*config) for config in _MOBILENET_V3_SMALL]
        layers.append(_conv_bn(96, 576, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(inplace=True), nn.Dropout(dropout),
                                        nn.Linear(1024, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def mobilenet_v3_small(num_classes=1000):
    """torchvision's MobileNetV3-small architecture (randomly initialised)."""
    return MobileNetV3Small(num_classes)
