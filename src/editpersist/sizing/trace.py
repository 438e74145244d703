"""Measuring one run of a model at real shapes with no memory: the run executes on fake
tensors (torch's FakeTensorMode: shapes, dtypes and strides, no storage), under
torch.distributed._tools.mem_tracker.MemTracker (live tensor bytes by category, at the peak)
and torch.utils.flop_counter.FlopCounterMode (matmul, convolution and attention FLOPs).

What differs from a CUDA run, and how it is bridged:
* Modules are built on the meta device (architectures.build) and then given fake CPU tensors
  (`materialize`): casting or moving fake modules fails, and building on the meta device lets
  peft attach adapters as it does on a GPU.
* Fake tensors live on the CPU: autograd refuses fake CUDA tensors without a GPU. CPU
  attention runs the flash kernel (it saves only the output and the log-sum-exp, as the CUDA
  flash and memory-efficient kernels do), and `cuda_float32_rules` gives CPU autocast the CUDA
  autocast's float32 rule for the ops that autocast runs in float32 on CUDA but not on the CPU
  (normalisations, softmax, pow, rsqrt, exp), so activations have the dtypes a GPU gives them.
* FLOPs are counted without FlopCounterMode's per-module attribution, with formulas for the
  CPU attention kernels it lacks, and nn.MultiheadAttention off its fused inference path,
  which FlopCounterMode cannot see into (`TotalFlopCounter`, `_no_mha_fastpath`).
* `PeakTracker` is MemTracker with three changes: it records the global peak and each phase's
  instead of every module's (MemTracker updates every module's own peak after every
  operator, which made a training step of SD 1.4's UNet take minutes; the global peak and its
  split are computed the same way); it hooks gradients only of parameters that require them
  (MemTracker hooks every parameter and fails on a frozen one); and its module tracker has no
  backward-pass hooks, whose reference cycles kept dead graphs alive (_ForwardModTracker).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Iterable, Iterator

import torch
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType
from torch.distributed._tools.mod_tracker import ModTracker
from torch.utils._pytree import tree_map_only
from torch.utils.flop_counter import FlopCounterMode

# MemTracker's categories -> the sizing's (a module's buffers count with its parameters; what
# MemTracker calls temporary memory, backward-pass buffers, with everything else).
CATEGORY = {_MemRefType.PARAM: "parameters", _MemRefType.BUFFER: "parameters", _MemRefType.GRAD: "gradients",
            _MemRefType.OPT: "optimizer", _MemRefType.ACT: "activations", _MemRefType.TEMP: "other",
            _MemRefType.OTH: "other"}
CATEGORIES = ("parameters", "gradients", "optimizer", "activations", "other")

# Operators CUDA autocast runs in float32 that CPU autocast leaves in the input's dtype,
# among those these models call (torch's AMP docs list the CUDA float32 set).
CUDA_FLOAT32_OPS = ("layer_norm", "group_norm", "softmax.int", "log_softmax.int", "pow.Tensor_Scalar",
                    "pow.Tensor_Tensor", "rsqrt", "exp")


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def materialize(module: torch.nn.Module) -> torch.nn.Module:
    """Give a meta-device module fake CPU tensors of the same shapes, dtypes and
    requires_grad, in place (call inside a fake mode); tied parameters stay tied."""
    made: dict[int, torch.Tensor] = {}

    def fake_of(t: torch.Tensor, parameter: bool) -> torch.Tensor:
        if id(t) not in made:
            new = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")
            made[id(t)] = torch.nn.Parameter(new, requires_grad=t.requires_grad) if parameter else new
        return made[id(t)]

    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None:
                mod._parameters[name] = fake_of(p, True)
        for name, b in list(mod._buffers.items()):
            if b is not None:
                mod._buffers[name] = fake_of(b, False)
    return module


def _to_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


@contextlib.contextmanager
def cuda_float32_rules() -> Iterator[None]:
    """While open, CPU autocast runs CUDA_FLOAT32_OPS in float32, as CUDA autocast does. Kept
    open for a whole step: activation checkpointing recomputes the forward in the backward
    pass under the autocast state the forward had."""
    lib = torch.library.Library("aten", "IMPL")
    excluded = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)
    try:
        for name in CUDA_FLOAT32_OPS:
            packet, _, overload = name.partition(".")
            op = getattr(getattr(torch.ops.aten, packet), overload or "default")

            def kernel(*args, _op=op, **kwargs):
                with torch._C._ExcludeDispatchKeyGuard(excluded):
                    args, kwargs = tree_map_only(torch.Tensor, _to_float32, (args, kwargs))
                    return _op(*args, **kwargs)

            lib.impl(name, kernel, "AutocastCPU")
        yield
    finally:
        lib._destroy()


def cuda_autocast(dtype: torch.dtype | None):
    """torch.autocast as a CUDA device runs it, on CPU tensors (nothing for None); its float32
    rules come from `cuda_float32_rules`, which `measure` keeps open."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=dtype)


class _ForwardModTracker(ModTracker):
    """ModTracker without its backward-pass hooks. Those are multi-grad hooks on every module's
    inputs and outputs; on a graph the backward never reaches (DoRA's norm of B A, computed and
    detached) they form reference cycles that keep the graph and its saved tensors alive until
    Python's cycle collector runs, memory a run without the tracker frees at once. The
    tracker needs the forward hooks only (the module stack, and activation checkpointing's
    recomputation, seen as forward hooks inside the backward pass)."""

    def _fw_pre_hook(self, mod, input):
        name = self._get_mod_name(mod)
        self._get_append_fn(weakref.ref(mod), name, False)()
        if self._user_pre_fw_hook is not None:
            self._user_pre_fw_hook(mod, input)

    def _fw_post_hook(self, mod, input, output):
        name = self._get_mod_name(mod)
        if self._user_post_fw_hook is not None:
            self._user_post_fw_hook(mod, input, output)
        self._get_pop_fn(weakref.ref(mod), name, False)()


class PeakTracker(MemTracker):
    """MemTracker keeping the global peak and each phase's (`phase(name)` starts one; the
    run is phase 'run' until told otherwise), hooking trainable parameters only, tracking the
    module stack in the forward pass only (_ForwardModTracker)."""

    def __init__(self) -> None:
        super().__init__()
        self._mod_tracker = _ForwardModTracker()
        self.current_phase = "run"
        self.phase_peaks: dict[str, dict[torch.device, dict]] = {}

    def phase(self, name: str) -> None:
        self.current_phase = name
        self._update_peak_stats(None)

    def _update_peak_stats(self, peak_state) -> None:
        phase = self.phase_peaks.setdefault(self.current_phase, {})
        for dev, snap in self._curr_mem_snap.items():
            if self._peak_mem.get(dev, 0) < snap["Total"]:
                self._peak_mem[dev] = snap["Total"]
                self._peak_mem_snap[dev] = dict(snap)
            if phase.get(dev, {}).get("Total", -1) < snap["Total"]:
                phase[dev] = dict(snap)

    def _pre_fw_hook(self, module: torch.nn.Module, inputs) -> None:
        # A root module called twice before one backward (DreamBooth's instance and prior
        # batches) is refused by MemTracker, for the sake of per-module statistics this
        # tracker does not keep: the second call starts the module's statistics afresh.
        name = self._mod_tracker.get_known_fqn(module)
        if (module in self.memory_tracking and not self._mod_tracker.is_bw
                and set(self._mod_tracker.parents) - {name} == {"Global"}):
            del self.memory_tracking[module]
        super()._pre_fw_hook(module, inputs)

    def _track_module_params_and_buffers(self, module: torch.nn.Module, install_grad_hooks: bool = True):
        def grad_hook(grad: torch.Tensor) -> None:
            self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

        param_memory = 0
        for param in module.parameters():
            winfos = self._update_and_maybe_create_winfos(param, _MemRefType.PARAM)
            param_memory += sum(w.mem_consumed for w in winfos)
            if param.grad is not None:
                self._update_and_maybe_create_winfos(param.grad, _MemRefType.GRAD)
            if install_grad_hooks and param.requires_grad and self._param_to_grad_hook_handles.get(param) is None:
                self._param_to_grad_hook_handles[param] = (
                    param.register_hook(grad_hook),
                    param.register_post_accumulate_grad_hook(lambda p: grad_hook(p.grad)))
        buffer_memory = 0
        for buffer in module.buffers():
            winfos = self._update_and_maybe_create_winfos(buffer, _MemRefType.BUFFER)
            buffer_memory += sum(w.mem_consumed for w in winfos)
        return param_memory, buffer_memory


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP counts toward 'Global'."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def _cpu_attention_flops():
    """FLOP formulas for the CPU flash-attention kernels, which FlopCounterMode's registry
    lacks: the same counts as its CUDA flash-attention formulas."""
    from torch.utils import flop_counter

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


class TotalFlopCounter(FlopCounterMode):
    """FlopCounterMode counting the total only, the CPU attention kernels included. Its module
    tracker hooks every module's outputs, also when activation checkpointing recomputes the
    forward in the backward pass, and those hooks keep the recomputed graphs (and the tensors
    they save) alive: the memory measured beside it would include them."""

    def __init__(self):
        super().__init__(display=False, custom_mapping=_cpu_attention_flops())
        self.mod_tracker = _GlobalOnly()


def by_category(snapshot: dict) -> dict[str, int]:
    """A MemTracker snapshot ({device: {reference type: bytes}}) in the sizing's categories
    (bytes; all devices summed)."""
    out = dict.fromkeys(CATEGORIES, 0)
    for snap in snapshot.values():
        for ref, nbytes in snap.items():
            if ref in CATEGORY:
                out[CATEGORY[ref]] += int(nbytes)
    return out


def measure_phases(run: Callable[[], object], tracked: Iterable = (), tracker: PeakTracker | None = None
                   ) -> tuple[dict[str, dict[str, int]], float]:
    """({phase: peak bytes by category}, FLOPs) of `run()`; `run` may call tracker.phase(name).
    `tracked`: modules, optimizers and tensors that exist before the run
    (MemTracker.track_external); tensors the run creates are tracked as it creates them.
    Works on fake and on real tensors alike."""
    tracker = tracker or PeakTracker()
    tracker.track_external(*tracked)
    with cuda_float32_rules(), _no_mha_fastpath(), tracker, TotalFlopCounter() as flops:
        tracker.phase(tracker.current_phase)
        run()
    return {name: by_category(snap) for name, snap in tracker.phase_peaks.items()}, float(flops.get_total_flops())


def highest(phases: dict[str, dict[str, int]]) -> dict[str, int]:
    """The peak of the phase whose peak is highest: the run's peak."""
    return max(phases.values(), key=lambda p: sum(p.values()))


def measure(run: Callable[[], object], tracked: Iterable = (), tracker: PeakTracker | None = None
            ) -> tuple[dict[str, int], float]:
    """(peak bytes by category, FLOPs) of `run()` (see measure_phases)."""
    phases, flops = measure_phases(run, tracked, tracker)
    return highest(phases), flops


@contextlib.contextmanager
def _no_mha_fastpath() -> Iterator[None]:
    """nn.MultiheadAttention's inference fast path (open_clip's towers) runs as one fused
    operator FlopCounterMode cannot count; the ordinary path runs the same products."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
