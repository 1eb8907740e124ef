"""Model definitions (PyTorch, CPU): a small CNN, a ResNet-18-size network, a 2.5D CT-slab CNN.

All three output one logit (binary task). ``StudyNet`` is the single class engines instantiate
from a plain dict (``{"architecture": ..., "in_channels": ..., "width": ...}``), so a server can
build the architecture without importing a study file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm, or GroupNorm with one group (no running statistics: what DP training needs,
    since every shared tensor is then a noised parameter)."""
    if kind == "group":
        return nn.GroupNorm(1, channels)
    return nn.BatchNorm2d(channels)


def _conv_block(cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head; input size free (global average pooling)."""

    def __init__(self, in_channels: int = 1, width: int = 16, norm: str = "batch") -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(in_channels, width, norm),
            _conv_block(width, width * 2, norm),
            _conv_block(width * 2, width * 4, norm),
        )
        self.head = nn.Linear(width * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))
        return self.head(h).squeeze(1)


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, cout)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.down(x))


class ResNet18(nn.Module):
    """ResNet-18 layout (He et al. 2016: 4 stages × 2 basic blocks) for grey-scale radiographs.

    ``width`` 64 gives the original 11 M parameters; smaller widths keep the depth for CPU runs.
    Global average pooling makes the input size configurable.
    """

    def __init__(self, in_channels: int = 1, width: int = 64, norm: str = "batch") -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
            _norm(norm, width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages: list[nn.Module] = []
        cin = width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            stride = 1 if i == 0 else 2
            stages += [_Basic(cin, cout, stride, norm), _Basic(cout, cout, 1, norm)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x)).mean(dim=(2, 3))
        return self.head(h).squeeze(1)


class Slab25D(SmallCNN):
    """2.5D CT model: ``k`` adjacent slices enter as channels of a 2-D CNN (centre slice labelled).

    The first layer sees all slices at once, so through-plane context costs no 3-D convolutions.
    """

    def __init__(self, in_channels: int = 5, width: int = 16, norm: str = "batch") -> None:
        super().__init__(in_channels=in_channels, width=width, norm=norm)


_ARCHITECTURES: dict[str, type[nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet18": ResNet18,
    "cnn25d": Slab25D,
}


def standardize_images(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance per image and channel.

    Part of the network (so the exported ONNX model does it too): a site's tone curve or
    exposure moves every pixel of its images; per-image standardisation removes the affine part
    of that shift before the first convolution instead of leaving it for the model to learn.
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=(2, 3), keepdim=True)
    return centred / torch.sqrt(var + eps)


INPUT_NORMS = ("none", "image")


class StudyNet(nn.Module):
    """The network a study asks for, built from plain arguments (what engines serialise)."""

    def __init__(
        self,
        architecture: str = "small_cnn",
        in_channels: int = 1,
        width: int = 16,
        norm: str = "batch",
        input_norm: str = "none",
    ) -> None:
        super().__init__()
        if architecture not in _ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; use {sorted(_ARCHITECTURES)}")
        if norm not in ("batch", "group"):
            raise ValueError(f"unknown norm {norm!r}; use batch or group")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm {input_norm!r}; use none or image")
        # Kept as attributes: FLARE serialises a component instance (FedOptRecipe's server model)
        # by reading its constructor arguments back from same-named attributes; without them
        # the server would rebuild the default network.
        self.architecture, self.in_channels, self.width, self.norm = (
            architecture,
            in_channels,
            width,
            norm,
        )
        self.input_norm = input_norm
        self.net = _ARCHITECTURES[architecture](in_channels=in_channels, width=width, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm == "image":
            x = standardize_images(x)
        return self.net(x)


def model_args(
    architecture: str, slices: int, width: int, norm: str = "batch", input_norm: str = "none"
) -> dict[str, Any]:
    """The constructor arguments of ``StudyNet`` for a study's model and input."""
    return {
        "architecture": architecture,
        "in_channels": slices,
        "width": width,
        "norm": norm,
        "input_norm": input_norm,
    }


def parameter_bytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes of one full model transfer (float payload, no framing)."""
    return int(sum(t.numel() * t.element_size() for t in state.values()))
