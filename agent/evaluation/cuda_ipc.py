"""Tensors across the split layout's two processes without leaving the GPU: CUDA IPC through the driver.

Only the judge exports. It allocates each transfer buffer with the driver's `cuMemAlloc` (an allocation
of its own: a mapping of it reaches nothing else the judge holds, as a block of PyTorch's caching
allocator would), fills it or leaves it for the worker to fill, and exports it (`cuIpcGetMemHandle`). The
worker maps the buffer (`cuIpcOpenMemHandle`), copies into tensors of its own or out of its outputs,
synchronizes, and unmaps it before it replies. The judge never opens a handle the worker made, so nothing
the candidate's process sends is mapped into the judge's. Where a handle does not open in the worker
(the sandbox's namespaces, an old driver), `probe` says why and tensors cross as files instead
(agent/evaluation/runners.py).

A buffer is raw bytes: a tensor crosses as its whole storage plus its dtype, size, stride and offset, so
layouts other than contiguous arrive as they were sent.
"""

from __future__ import annotations

import ctypes
from typing import Any

from pydantic import BaseModel, Field

HANDLE_BYTES = 64
LAZY_ENABLE_PEER_ACCESS = 1
DTYPES = [
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e5m2",
]


class IpcError(RuntimeError):
    pass


class SharedTensor(BaseModel):
    """A judge's transfer buffer and the tensor it holds (or will hold)."""

    handle: str = Field(pattern=r"^[0-9a-f]{128}$")  # the 64-byte IPC handle, in hex
    nbytes: int = Field(ge=0)
    dtype: str
    size: list[int]
    stride: list[int]
    offset: int = Field(default=0, ge=0)


class TensorMeta(BaseModel):
    """What the worker holds: enough for the judge to size a buffer for it (contiguous)."""

    dtype: str
    size: list[int]


class _Handle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * HANDLE_BYTES)]


class Driver:
    """The few driver calls IPC needs, in the current (PyTorch's primary) context."""

    def __init__(self) -> None:
        import torch

        torch.empty(1, device="cuda")  # the primary context exists and is current before any driver call
        self.lib = ctypes.CDLL("libcuda.so.1")
        self.open_fn = getattr(self.lib, "cuIpcOpenMemHandle_v2", None) or self.lib.cuIpcOpenMemHandle
        self.open_fn.argtypes = [ctypes.POINTER(ctypes.c_uint64), _Handle, ctypes.c_uint]

    def _ok(self, rc: int, what: str) -> None:
        if rc != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(rc, ctypes.byref(name))
            raise IpcError(f"{what}: {(name.value or b'').decode() or rc}")

    def alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        self._ok(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), "cuMemAlloc")
        return ptr.value

    def free(self, ptr: int) -> None:
        self._ok(self.lib.cuMemFree_v2(ctypes.c_uint64(ptr)), "cuMemFree")

    def export(self, ptr: int) -> str:
        handle = _Handle()
        self._ok(self.lib.cuIpcGetMemHandle(ctypes.byref(handle), ctypes.c_uint64(ptr)), "cuIpcGetMemHandle")
        return bytes(handle).hex()

    def open(self, hex_handle: str) -> int:
        handle = _Handle.from_buffer_copy(bytes.fromhex(hex_handle))
        ptr = ctypes.c_uint64()
        self._ok(self.open_fn(ctypes.byref(ptr), handle, LAZY_ENABLE_PEER_ACCESS), "cuIpcOpenMemHandle")
        return ptr.value

    def close(self, ptr: int) -> None:
        self._ok(self.lib.cuIpcCloseMemHandle(ctypes.c_uint64(ptr)), "cuIpcCloseMemHandle")


_DRIVER: Driver | None = None


def driver() -> Driver:
    global _DRIVER
    if _DRIVER is None:
        _DRIVER = Driver()
    return _DRIVER


class _Raw:
    """`nbytes` at `ptr` as a uint8 array PyTorch can view (the CUDA array interface)."""

    def __init__(self, ptr: int, nbytes: int):
        self.__cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (ptr, False),
            "version": 3,
            "strides": None,
        }


def raw_view(ptr: int, nbytes: int) -> Any:
    import torch

    return torch.as_tensor(_Raw(ptr, nbytes), device="cuda")


def dtype_of(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise IpcError(f"dtype {name!r} cannot cross")
    return getattr(torch, name)


def dtype_name(x: Any) -> str:
    """`x`'s dtype as it crosses ("float16"), the name `dtype_of` takes back."""
    return str(x.dtype).removeprefix("torch.")


def _storage_bytes(x: Any) -> Any:
    """`x`'s whole storage as uint8 (what a `SharedTensor` carries)."""
    import torch

    return torch.empty(0, dtype=torch.uint8, device=x.device).set_(x.untyped_storage())


def _contiguous_bytes(x: Any) -> Any:
    """`x`'s elements in order, as uint8."""
    import torch

    return x.contiguous().reshape(-1).view(torch.uint8)


# --- the judge's side: export ----------------------------------------------------------------------


class Exported:
    """The judge's transfer buffers for one exchange; `release` frees them (after the worker's reply)."""

    def __init__(self) -> None:
        self.ptrs: list[int] = []

    def share(self, x: Any) -> SharedTensor:
        """A buffer holding `x`'s whole storage (copied now)."""
        d = driver()
        nbytes = x.untyped_storage().nbytes()
        ptr = d.alloc(nbytes)
        self.ptrs.append(ptr)
        if nbytes:
            raw_view(ptr, nbytes).copy_(_storage_bytes(x))
        return SharedTensor(
            handle=d.export(ptr),
            nbytes=nbytes,
            dtype=dtype_name(x),
            size=list(x.shape),
            stride=list(x.stride()),
            offset=x.storage_offset(),
        )

    def empty(self, meta: TensorMeta, limit: int) -> tuple[SharedTensor, int]:
        """A buffer for a contiguous tensor the worker will write; `limit`: the most bytes allowed."""
        import math

        import torch

        itemsize = torch.empty(0, dtype=dtype_of(meta.dtype)).element_size()
        if any(s < 0 for s in meta.size):
            raise IpcError(f"a negative size {meta.size}")
        nbytes = math.prod(meta.size) * itemsize
        if nbytes > limit:
            raise IpcError(f"the worker's tensor of {nbytes} bytes is over the {limit} allowed")
        d = driver()
        ptr = d.alloc(nbytes)
        self.ptrs.append(ptr)
        strides = [math.prod(meta.size[i + 1 :]) for i in range(len(meta.size))]
        shared = SharedTensor(
            handle=d.export(ptr), nbytes=nbytes, dtype=meta.dtype, size=meta.size, stride=strides
        )
        return shared, ptr

    def release(self) -> None:
        d = driver()
        for ptr in self.ptrs:
            d.free(ptr)
        self.ptrs.clear()


def read_back(shared: SharedTensor, ptr: int) -> Any:
    """The judge's own tensor from a buffer the worker filled (the buffer is freed by `release`)."""
    import torch

    out = torch.empty(shared.size, dtype=dtype_of(shared.dtype), device="cuda")
    if shared.nbytes:
        _contiguous_bytes(out).copy_(raw_view(ptr, shared.nbytes))
    return out


# --- the worker's side: map, copy, unmap -----------------------------------------------------------


def receive(shared: SharedTensor) -> Any:
    """A tensor of this process's own holding what the judge's buffer holds (the buffer is unmapped)."""
    import torch

    d = driver()
    ptr = d.open(shared.handle)
    try:
        storage = torch.empty(shared.nbytes, dtype=torch.uint8, device="cuda")
        if shared.nbytes:
            storage.copy_(raw_view(ptr, shared.nbytes))
        torch.cuda.synchronize()
    finally:
        d.close(ptr)
    return torch.empty(0, dtype=dtype_of(shared.dtype), device="cuda").set_(
        storage.untyped_storage(), shared.offset, shared.size, shared.stride
    )


def send(x: Any, shared: SharedTensor) -> None:
    """`x`, made contiguous, into the judge's buffer (sizes checked first), then unmapped."""
    import torch

    if list(x.shape) != shared.size or dtype_name(x) != shared.dtype:
        raise IpcError("the judge's buffer does not match the tensor")
    d = driver()
    ptr = d.open(shared.handle)
    try:
        if shared.nbytes:
            raw_view(ptr, shared.nbytes).copy_(_contiguous_bytes(x))
        torch.cuda.synchronize()
    finally:
        d.close(ptr)


def meta(x: Any) -> TensorMeta:
    return TensorMeta(dtype=dtype_name(x), size=list(x.shape))


def load_inputs(path: str, shared: list[SharedTensor | None], device: str) -> list[Any]:
    """The inputs the judge sent: the file's (`torch.save`, read with weights_only) on `device`, with those
    in the judge's buffers (`shared`, CUDA IPC) in their places."""
    import torch

    loaded = [x.to(device) if isinstance(x, torch.Tensor) else x for x in torch.load(path, weights_only=True)]
    for i, sh in enumerate(shared):
        if sh is not None and i < len(loaded):
            loaded[i] = receive(sh)
    return loaded


def probe_sum(shared: SharedTensor) -> int:
    """The sum of the bytes in a judge's probe buffer, as this process reads them."""
    return int(receive(shared).view(-1).to(dtype_of("int64")).sum())
