#!/usr/bin/env python3
"""PyTorch CPU timings of the nets in ../shared/fixtures/caffe/timing, for bench/cpu.sh.

Each net is written layer for layer like its prototxt (ceil-mode pooling as Caffe pools,
BatchNorm2d with affine for Caffe's BatchNorm + Scale, cross-entropy for SoftmaxWithLoss) and
timed as `caffe time` / `crema time` time it: forward + backward in training mode, float32,
gradients accumulating, no solver step. One warm-up iteration, then the mean of `--iterations`.

Prints one line per (net, layout): `pytorch <net> <nchw|channels_last> <ms>`.
Not part of CI: torch is a multi-gigabyte install (bench/pytorch.sh finds an interpreter).
"""

import argparse
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet(nn.Module):
    batch, shape, classes = 64, (1, 28, 28), 10

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.ip1 = nn.Linear(800, 500)
        self.ip2 = nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2, 2, ceil_mode=True)
        x = F.max_pool2d(self.conv2(x), 2, 2, ceil_mode=True)
        x = F.relu(self.ip1(x.flatten(1)), inplace=True)
        return self.ip2(x)


class Cifar10Quick(nn.Module):
    batch, shape, classes = 100, (3, 32, 32), 10

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 32, 5, padding=2)
        self.conv3 = nn.Conv2d(32, 64, 5, padding=2)
        self.ip1 = nn.Linear(64 * 4 * 4, 64)
        self.ip2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 3, 2, ceil_mode=True), inplace=True)
        x = F.avg_pool2d(F.relu(self.conv2(x), inplace=True), 3, 2, ceil_mode=True)
        x = F.avg_pool2d(F.relu(self.conv3(x), inplace=True), 3, 2, ceil_mode=True)
        return self.ip2(self.ip1(x.flatten(1)))


class BasicBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, plus the shortcut (a strided 1x1 conv + BN when the shape
    changes), then ReLU: the prototxt's s*b* blocks."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.a_bn = nn.BatchNorm2d(cout)
        self.b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b_bn = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.a_bn(self.a(x)), inplace=True)
        y = self.b_bn(self.b(y))
        s = x if self.proj is None else self.proj(x)
        return F.relu(y + s, inplace=True)


class ResNet20(nn.Module):
    batch, shape, classes = 128, (3, 32, 32), 10

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in [(16, 1), (32, 2), (64, 2)]:
            for i in range(3):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


NETS = {"lenet": LeNet, "cifar10_quick": Cifar10Quick, "resnet20_cifar": ResNet20}
ITERS = {"lenet": 20, "cifar10_quick": 20, "resnet20_cifar": 5}


def time_net(name, layout, iterations):
    torch.manual_seed(1701)
    net = NETS[name]()
    net.train()
    x = torch.randn(net.batch, *net.shape)
    label = torch.randint(0, net.classes, (net.batch,))
    if layout == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        F.cross_entropy(net(x), label).backward()

    step()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    return (time.perf_counter() - start) * 1e3 / iterations


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", choices=sorted(NETS) + ["all"], default="all")
    p.add_argument("--layout", choices=["nchw", "channels_last", "both"], default="both")
    p.add_argument("--iterations", type=int, default=0, help="0: 20, or 5 for ResNet-20")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    nets = sorted(NETS) if a.net == "all" else [a.net]
    layouts = ["nchw", "channels_last"] if a.layout == "both" else [a.layout]
    for name in nets:
        for layout in layouts:
            ms = time_net(name, layout, a.iterations or ITERS[name])
            print(f"pytorch {name} {layout} {ms:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
