"""The anti-cheat rules of the static checks (agent/source/anticheat.py): what each rule rejects, the name
tables the checker resolves calls against, and the report it returns. docs/anticheat.md says what each
rule catches and what it misses."""

from __future__ import annotations

from dataclasses import dataclass, field

# Rule id -> one line on what it rejects. The order is the priority: a candidate breaking several rules
# is reported under the first (the others are listed too).
RULES: dict[str, str] = {
    "process-exit": "ending or signalling processes (os._exit, sys.exit, SystemExit, os.kill of another "
    "process, signal handlers, atexit)",
    "monkey-patch": "assigning to attributes of imported modules or their classes (torch, triton, the "
    "harness, builtins...), sys.modules or os.environ entries, torch._C, torch.library",
    "tensor-subclass": "torch.Tensor subclasses, _make_subclass/as_subclass, __torch_function__/"
    "__torch_dispatch__, torch.overrides, __class__ assignment",
    "frame-peeking": "introspection of the caller or the interpreter: sys._getframe, inspect, gc, "
    "traceback, ctypes, globals()/locals()/vars(), frame and code attributes, __builtins__",
    "code-generator": "code made or compiled at run time: exec/eval/compile, importlib's loaders, "
    "torch.compile, torch.jit, torch._dynamo/_inductor, torch.fx, cpp extensions, marshal/pickle",
    "reference-import": "using the reference module (Model, get_inputs, get_init_inputs, the reference "
    "file) or the evaluation harness (agent, sys.modules)",
    "threads": "threads and other processes: threading, _thread, multiprocessing, concurrent.futures, "
    "asyncio, subprocess, os.fork/system/popen/spawn/exec",
    "side-stream": "CUDA streams and graphs: torch.cuda.Stream, torch.cuda.stream, set_stream, "
    "wait_stream, record_stream, CUDAGraph",
    "try-except": "try/except (fallbacks that hide failures), contextlib.suppress, __exit__ methods",
    "result-cache": "state kept across forward calls: id() or data_ptr() used as keys, returning objects "
    "stored on self or in module globals, global statements, functools caches over tensor arguments",
    "torch-compute": "PyTorch compute in the forward path (torch.* and torch.nn.functional calls, tensor "
    "compute methods, the @ operator, nn layers); only allocation, shape and layout calls are allowed",
    "dynamic-access": "attributes looked up or set by a computed name (getattr/setattr with a non-literal "
    "name, __dict__, __getattribute__): the other rules could not see through them",
    "no-triton-kernel": "no @triton.jit kernel defined in the module",
}
PRIORITY = list(RULES)


def _words(text: str) -> list[str]:
    return text.split()


# --- tables ------------------------------------------------------------------------------------------

# importlib's parts that import installed packages by name or read their metadata (version checks):
# allowed; the rest of importlib (loading from a path, reload, loaders) stays a code-generator.
IMPORTLIB_ALLOWED = frozenset(
    {"importlib", "importlib.metadata", "importlib.import_module", "importlib.util.find_spec"}
)
# Modules that may be imported as such (`import importlib.util` for its find_spec) while each of their
# other attributes is still judged by name (importlib.util.spec_from_file_location stays a code-generator).
IMPORTLIB_MODULES = frozenset({"importlib.util"})
# Static findings the run-time accounting decides (torch ops, caches, fallbacks and what a computed name
# resolves to are all seen when they run): shown with the verdict as evidence, never a rejection alone.
EVIDENCE_ONLY = frozenset({"torch-compute", "result-cache", "try-except", "dynamic-access"})

# Module (or dotted prefix) -> rule, for imports and for any resolved name under it.
BANNED_PREFIXES: dict[str, str] = {
    "importlib": "code-generator",
    "imp": "code-generator",
    "runpy": "code-generator",
    "code": "code-generator",
    "codeop": "code-generator",
    "marshal": "code-generator",
    "pickle": "code-generator",
    "dill": "code-generator",
    "cloudpickle": "code-generator",
    "numba": "code-generator",
    "cupy": "code-generator",
    "cffi": "code-generator",
    "torch.compile": "code-generator",
    "torch.compiler": "code-generator",
    "torch.jit": "code-generator",
    "torch.fx": "code-generator",
    "torch.export": "code-generator",
    "torch._dynamo": "code-generator",
    "torch._inductor": "code-generator",
    "torch._higher_order_ops": "code-generator",
    "torch.utils.cpp_extension": "code-generator",
    "types.FunctionType": "code-generator",
    "types.CodeType": "code-generator",
    "types.LambdaType": "code-generator",
    "types.ModuleType": "code-generator",
    "inspect": "frame-peeking",
    "gc": "frame-peeking",
    "traceback": "frame-peeking",
    "ctypes": "frame-peeking",
    "builtins": "frame-peeking",
    "tracemalloc": "frame-peeking",
    "sys._getframe": "frame-peeking",
    "sys._current_frames": "frame-peeking",
    "sys._current_exceptions": "frame-peeking",
    "sys.settrace": "frame-peeking",
    "sys.setprofile": "frame-peeking",
    "sys.addaudithook": "frame-peeking",
    "sys.exc_info": "frame-peeking",
    "sys.exception": "frame-peeking",
    "sys.last_traceback": "frame-peeking",
    "sys.modules": "reference-import",
    "agent": "reference-import",
    "sys.exit": "process-exit",
    "os._exit": "process-exit",
    "os.abort": "process-exit",
    "atexit": "process-exit",
    "signal.signal": "process-exit",
    "signal.alarm": "process-exit",
    "signal.setitimer": "process-exit",
    "signal.pthread_kill": "process-exit",
    "signal.sigwait": "process-exit",
    "signal.pthread_sigmask": "process-exit",
    "threading": "threads",
    "_thread": "threads",
    "multiprocessing": "threads",
    "concurrent": "threads",
    "asyncio": "threads",
    "subprocess": "threads",
    "pty": "threads",
    "sched": "threads",
    "torch.multiprocessing": "threads",
    "os.fork": "threads",
    "os.forkpty": "threads",
    "os.system": "threads",
    "os.popen": "threads",
    "os.posix_spawn": "threads",
    "os.posix_spawnp": "threads",
    "torch.cuda.Stream": "side-stream",
    "torch.cuda.stream": "side-stream",
    "torch.cuda.streams": "side-stream",
    "torch.cuda.ExternalStream": "side-stream",
    "torch.cuda.set_stream": "side-stream",
    "torch.cuda.StreamContext": "side-stream",
    "torch.cuda.CUDAGraph": "side-stream",
    "torch.cuda.graph": "side-stream",
    "torch.cuda.graphs": "side-stream",
    "torch.cuda.make_graphed_callables": "side-stream",
    "torch.Stream": "side-stream",
    "torch.StreamContext": "side-stream",
    "torch.cuda.Event": "side-stream",
    "torch.Event": "side-stream",
    "torch._C": "monkey-patch",
    "torch.library": "monkey-patch",
    "torch.overrides": "tensor-subclass",
    "torch.utils._python_dispatch": "tensor-subclass",
    "torch._subclasses": "tensor-subclass",
    "contextlib.suppress": "try-except",
}
OS_PREFIX_RULES = {"os.spawn": "threads", "os.exec": "threads"}

# Builtins (when the module does not bind the name itself).
BUILTIN_RULES: dict[str, str] = {
    "exec": "code-generator",
    "eval": "code-generator",
    "compile": "code-generator",
    "breakpoint": "code-generator",
    "globals": "frame-peeking",
    "locals": "frame-peeking",
    "vars": "frame-peeking",
    "__builtins__": "frame-peeking",
    "exit": "process-exit",
    "quit": "process-exit",
    "SystemExit": "process-exit",
    "KeyboardInterrupt": "process-exit",
}

FRAME_ATTRS = {
    "f_back",
    "f_locals",
    "f_globals",
    "f_builtins",
    "f_code",
    "f_trace",
    "tb_frame",
    "tb_next",
    "gi_frame",
    "cr_frame",
    "ag_frame",
    "gi_code",
    "__globals__",
    "__closure__",
    "__code__",
    "__subclasses__",
    "__builtins__",
}
DYNAMIC_ATTRS = {"__dict__", "__getattribute__", "__setattr__", "__delattr__"}
SUBCLASS_ATTRS = {"_make_subclass", "as_subclass", "_make_wrapper_subclass"}
STREAM_METHODS = {"wait_stream", "record_stream", "wait_event"}
REFERENCE_NAMES = {"Model", "get_inputs", "get_init_inputs"}
TENSOR_BASES = {
    "torch.Tensor",
    "torch.nn.Parameter",
    "torch.nn.parameter.Parameter",
    "torch.nn.Buffer",
    "torch._C.TensorBase",
    "torch._C._TensorBase",
}

# torch.* callables the forward path may use: allocation, metadata, views, device queries.
TORCH_ALLOWED = {
    *(
        f"torch.{n}"
        for n in _words(
            "empty empty_like empty_strided zeros zeros_like ones ones_like full full_like tensor "
            "as_tensor arange device Size finfo iinfo is_tensor is_floating_point is_complex numel "
            "get_default_dtype get_default_device result_type promote_types can_cast broadcast_shapes "
            "no_grad inference_mode enable_grad is_grad_enabled as_strided reshape flatten t transpose "
            "permute squeeze unsqueeze narrow select split chunk movedim swapaxes unbind view_as_real "
            "view_as_complex dtype typename"
        )
    ),
    *(
        f"torch.cuda.{n}"
        for n in _words(
            "current_stream default_stream current_device device get_device_properties "
            "get_device_capability get_device_name is_available device_count synchronize mem_get_info"
        )
    ),
}
TORCH_ALLOWED_PREFIXES = ("torch.cuda.nvtx.",)

# Tensor methods that are allocation, metadata, views or plain copies (never the problem's work).
TENSOR_ALLOWED = set(
    _words(
        "size stride numel dim ndimension nelement element_size is_contiguous data_ptr storage_offset "
        "untyped_storage is_floating_point is_complex get_device view view_as reshape reshape_as "
        "contiguous expand expand_as permute transpose t unsqueeze squeeze flatten unflatten narrow "
        "select as_strided unbind split chunk movedim swapaxes new_empty new_zeros new_ones new_full "
        "new_empty_strided new_tensor zero_ fill_ copy_ clone detach requires_grad_ to cuda cpu item "
        "__len__ __getitem__ __setitem__ __repr__ __format__ __index__ __int__ __float__ __bool__ "
        "__hash__ __iter__ type_as"
    )
)

# Method names that compute when called on a tensor; called on an object the AST cannot resolve, they
# are judged as tensor compute. Names shared with common Python types (add, sort, count, index, copy,
# split, values...) are left out: the run-time guard sees those.
TENSOR_COMPUTE = set(
    _words(
        "abs absolute acos acosh addbmm addcdiv addcmul addmm addmv addr all amax amin aminmax angle any "
        "arccos arccosh arcsin arcsinh arctan arctan2 arctanh argmax argmin argsort asin asinh atan atan2 "
        "atanh baddbmm bincount bitwise_and bitwise_not bitwise_or bitwise_xor bmm ceil cholesky clamp "
        "clamp_max clamp_min clip cos cosh count_nonzero cross cummax cummin cumprod cumsum deg2rad diag "
        "diff digamma dist div divide dot eq erf erfc erfinv exp exp2 expm1 flip fliplr flipud floor "
        "floor_divide fmax fmin fmod frac gather ge gt heaviside histc hypot index_add index_copy "
        "index_fill index_put index_select inner inverse isclose isfinite isinf isnan kron kthvalue le "
        "lerp lgamma log log10 log1p log2 logaddexp logcumsumexp logical_and logical_not logical_or "
        "logical_xor logit logsumexp lt masked_fill masked_scatter masked_select matmul max maximum mean "
        "median min minimum mm mode msort mul multiply mv nan_to_num nanmean nanmedian nansum ne neg "
        "negative norm outer pow prod quantile rad2deg reciprocal relu remainder renorm repeat "
        "repeat_interleave roll rot90 round rsqrt scatter scatter_add scatter_reduce sgn sigmoid sign "
        "signbit sin sinc sinh softmax log_softmax sqrt square std sub subtract sum take "
        "take_along_dim tan tanh tensordot tile topk trace tril triu true_divide trunc unique var vdot "
        "where xlogy numpy tolist"
    )
)
TENSOR_COMPUTE |= {f"{n}_" for n in TENSOR_COMPUTE if n not in ("numpy", "tolist")} | {
    "add_",
    "sub_",
    "mul_",
    "div_",
}
# torch.X referenced without a call (e.g. `fn = torch.mean`): flag these names.
TORCH_REF_COMPUTE = TENSOR_COMPUTE | set(
    _words(
        "cat stack hstack vstack einsum matmul mm bmm softmax log_softmax layer_norm conv1d conv2d conv3d "
        "linear add mul sub div"
    )
)
TORCH_MODULE_PREFIXES = (
    "torch.nn.functional.",
    "torch.linalg.",
    "torch.fft.",
    "torch.special.",
    "torch.ops.",
)

# nn classes that are containers, not compute layers.
NN_CONTAINERS = {
    "Module",
    "ModuleList",
    "ModuleDict",
    "Parameter",
    "ParameterList",
    "ParameterDict",
    "Buffer",
}

CACHE_DECORATORS = {"functools.cache", "functools.lru_cache", "functools.cached_property"}


@dataclass(frozen=True)
class Violation:
    rule: str
    line: int
    message: str

    def text(self) -> str:
        return f"{self.rule} (line {self.line}): {self.message}"


@dataclass
class StaticReport:
    """What the static checks found. `missing_modelnew` is not cheating: the source lacks the entry point."""

    violations: list[Violation] = field(default_factory=list)
    missing_modelnew: bool = False
    syntax_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.violations and not self.missing_modelnew

    @property
    def rule(self) -> str | None:
        """The rule the candidate is rejected under: the first broken rule in `PRIORITY` order."""
        ranked = self.ranked()
        return ranked[0].rule if ranked else None

    def ranked(self) -> list[Violation]:
        return sorted(self.violations, key=lambda v: (PRIORITY.index(v.rule), v.line))

    def reason(self, limit: int = 4) -> str:
        ranked = self.ranked()
        if not ranked:
            return ""
        first = ranked[0]
        text = f"{first.rule} (static check, line {first.line}): {first.message}"
        others = [v.text() for v in ranked[1:limit]]
        if others:
            text += "; also " + "; ".join(others)
            if len(ranked) > limit:
                text += f" (+{len(ranked) - limit} more)"
        return text
