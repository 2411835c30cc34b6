"""Fresh processes that load videoprism's models get exact float math from their first parallel unary op on.

Without `videoprism._mkl`, oneMKL's first-call race (pytorch/pytorch#188792) ran part of a fresh process's first
`torch.tanh` through a low-accuracy kernel (errors up to 7e-5; the golden fixtures failed in about 1 run in 20).
With 8 threads and every VML function, a fresh process shows the race often enough that 24 of them all missing it
is very unlikely.
"""

import subprocess
import sys

SCRIPT = """
import torch
import videoprism
videoprism.VideoPrismVisionModel  # the package root loads lazily; the model classes import the attention module
torch.set_num_threads(8)
x = torch.rand(65536, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05  # inside every function's domain
print(sum(not torch.equal(getattr(torch, name)(x), getattr(torch, name)(x)) for name in videoprism._mkl.VML_FUNCTIONS))
"""


def test_first_parallel_unary_ops_are_exact():
    for _ in range(24):
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[-1] == "0", "a function's first parallel call differed from its second"
