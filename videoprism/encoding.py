"""`BatchEncoding`: the model inputs the tokenizer and the processors return."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class BatchEncoding(dict):
    """Model inputs by name: a dict that also gives attribute access and moves its tensors with `.to()`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; it has {list(self)}") from None

    def to(
        self, device: str | torch.device | torch.dtype | None = None, dtype: torch.dtype | None = None
    ) -> BatchEncoding:
        """Moves the torch tensors to `device` (in place; returns self).

        Args:
            device: A device, or a dtype (then used as `dtype`).
            dtype: Casts floating-point tensors only (pixel values), never token ids or masks.
        """
        import torch  # here: decoding processes build encodings without ever importing torch

        if isinstance(device, torch.dtype):
            device, dtype = None, device
        for key, value in self.items():
            if not isinstance(value, torch.Tensor):
                continue
            if dtype is not None and value.is_floating_point():
                self[key] = value.to(device=device, dtype=dtype)
            elif device is not None:
                self[key] = value.to(device=device)
        return self
