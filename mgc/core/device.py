"""Where and how a model runs: device choice and the fast path (bf16 autocast, channels-last, compile)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mgc.core.config import ConfigError


@dataclass(frozen=True)
class FastPath:
    """How the model runs on this device: autocast dtype, memory format, compilation."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on this device, in this memory format (not compiled: callers decide)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def describe(self) -> dict[str, str]:
        return {
            "device": str(self.device),
            "amp_dtype": str(self.amp_dtype),
            "channels_last": str(self.channels_last),
            "compile": str(self.compile),
        }


CPU_FP32 = FastPath(torch.device("cpu"))


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 matrix units (AVX-512 BF16 / AMX); without them bf16 is emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_fast_path(
    device: torch.device, amp: str = "auto", channels_last: str = "auto", compile: str = "off"
) -> FastPath:
    """Each fast path only where it helps: bf16 on CUDA with bf16 and on CPUs with native bf16,
    channels-last on CPU and CUDA, compile on CUDA when asked for with "auto"."""
    amp_dtype: torch.dtype | None = None
    if amp == "bf16" or (
        amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    ):
        amp_dtype = torch.bfloat16
    elif amp == "auto" and device.type == "cpu" and cpu_has_bf16():
        amp_dtype = torch.bfloat16
    elif amp == "fp16":
        amp_dtype = torch.float16
    last = channels_last == "on" or (channels_last == "auto" and device.type in ("cpu", "cuda"))
    compiled = compile == "on" or (compile == "auto" and device.type == "cuda")
    return FastPath(device, amp_dtype, last, compiled)


def machine() -> dict[str, str | int | bool]:
    """What a timing or a trained model should be read against: CPU model, native bf16,
    threads, torch and the accelerator when there is one."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    info: dict[str, str | int | bool] = {
        "cpu": cpu,
        "native_bf16": cpu_has_bf16(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
