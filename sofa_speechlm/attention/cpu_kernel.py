"""Builds and loads the fused CPU flash kernel of csrc/sofa_flash_cpu.cpp (forward with row max).

Compiled once per machine by torch's JIT extension builder (tools/install.sh does it up front;
the build is cached under $TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions, and
redone when the source or the flags change). Where it cannot be built (no C++ compiler, say),
``fused_forward`` returns None and SOFA falls back to a separate row-max pass, with a warning.
"""
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "sofa_flash_cpu.cpp"
# Query rows and keys per tile: a 128 x 512 fp32 score tile (256 KiB) stays in a core's L2.
Q_BLOCK = 128
KV_BLOCK = 512
# The compiler flags of torch's own kernels for each CPU capability (at::vec picks its
# implementation from the CPU_CAPABILITY macros).
_CAPABILITY_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
}
logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _pinned_ninja_first():
    """torch runs `ninja` from PATH: put the venv's pinned ninja first, activated or not.

    Two ninja versions sharing one build directory read each other's build log as a changed
    command and rebuild every time they alternate (the system one and the venv's, say).
    """
    path = os.environ.get("PATH", "")
    venv_bin = os.path.dirname(sys.executable)
    if shutil.which("ninja", path=venv_bin):
        os.environ["PATH"] = venv_bin + os.pathsep + path
    try:
        yield
    finally:
        os.environ["PATH"] = path


def _extension_name(capability):
    """One build directory per checkout and CPU capability: torch names the directory after the
    extension, and two checkouts sharing one would rebuild whenever the other one had built."""
    checkout = hashlib.sha1(str(SOURCE.resolve()).encode()).hexdigest()[:10]
    return f"sofa_flash_cpu_{capability.lower()}_{checkout}"


@functools.cache
def load():
    """The compiled extension module, or None (logged once) when it cannot be built."""
    # Importing the builder logs a CUDA_HOME notice on CPU-only machines: irrelevant here.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    capability = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3", "-fopenmp"]
    if capability in _CAPABILITY_FLAGS:
        flags += [*_CAPABILITY_FLAGS[capability], f"-DCPU_CAPABILITY={capability}", f"-DCPU_CAPABILITY_{capability}"]
    else:
        flags += ["-DCPU_CAPABILITY=DEFAULT"]
    logger.info("loading the fused CPU attention kernel (compiled on first use, about 30 s)")
    try:
        with _pinned_ninja_first():
            return cpp_extension.load(
                name=_extension_name(capability),
                sources=[str(SOURCE)],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
            )
    except Exception as error:  # noqa: BLE001 - any build failure means: use the fallback
        message = str(error).strip().splitlines()
        logger.warning(
            "could not build the fused CPU attention kernel (%s); SOFA uses a separate row-max pass, "
            "about 15%% slower. A C++ compiler and ninja (tools/install.sh) are needed to build it.",
            message[-1] if message else type(error).__name__,
        )
        return None


# The kernel multiplies softmax(S)V by the normalizer's per-row gate (flash.py's module doc).
GATES = {"softmax": 0, "sofa": 1, "softmax1": 2}


def fused_forward(q, k, v, mask, causal, scale, normalizer="softmax"):
    """(softmax(S)V times the normalizer's gate, lse, row max, first argmax) from the fused kernel
    in fp32, or None if unavailable. A row without an allowed key gives zeros.

    mask: None or an additive fp32 mask [B or 1, H or 1, Lq, Lk] (-inf forbids a key), as
    masks.additive_mask makes it; causal: the top-left triangle, for Lq == Lk.
    """
    module = load()
    if module is None:
        return None
    if mask is not None and mask.stride(-1) != 1:  # the kernel reads each row's keys contiguously
        mask = mask.contiguous()
    if q.dtype != torch.float32:
        q, k, v = q.float(), k.float(), v.float()
    return module.forward(q, k, v, mask, causal, scale, Q_BLOCK, KV_BLOCK, GATES[normalizer])
