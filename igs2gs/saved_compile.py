"""Compiled editor pieces saved whole on disk, so that a later run loads them without tracing the model again.

torch.compile's caches keep inductor's kernels between runs, but each new process still traces the model with dynamo:
18-25 s for InstructPix2Pix's step and VAE from a warm cache on an H200 (benchmarks/RESULTS.md). Dynamo's AOT compile
(`OptimizedModule._aot_compile`, experimental in torch) compiles a module for given inputs and serialises the compiled
graphs with their guards. A fresh process loads them onto its own module, whose weights the graphs read at each call:
about 1 s for the tiny test model on a CPU.

A saved piece keeps none of dynamo's guards. Its key stands for everything they checked: torch's and diffusers'
versions, the device, this package's source, the editor's modules (classes, configs, attention processors, and the
tensors' names, shapes, dtypes and strides), dynamo's global state and the exact inputs; a call runs the piece of its
key. Rebuilding the guards of InstructPix2Pix's step took 2.3 s of its 3.1 s load on the lent GPU machine (py-spy);
without them the load took 1.4 s (benchmarks/RESULTS.md, "Nineteenth session").

Anything that fails (a torch without the API, a graph that does not serialise, a file that does not load) falls back
to torch.compile as before.
"""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from igs2gs.dynamo_compat import sources_pickle_their_init_fields
from igs2gs.edit_journal import write_atomically
from igs2gs.ip2p_speed import CompiledThenRunOnly

_PACKAGE = Path(__file__).resolve().parent

FOLDER = "igs2gs-saved"
"""The compile cache's subfolder of saved pieces."""

INDUCTOR_OPTIONS: dict[str, Any] = {"dynamic_scale_rblock": False}
"""Inductor settings the pieces are compiled with (part of their key). Inductor gives register-heavy reductions a
second, half-size block config when a compiled piece loads, and in torch 2.11 benchmarks the two again in every
process without caching the pick (pytorch/pytorch#189121): work in each loaded piece's first call. Without that config
edits are as fast (benchmarks/RESULTS.md, "Twenty-first session", call 5: 140.8 ms per view either way)."""


def no_guards(entries: list[Any]) -> list[bool]:
    """Dynamo's guard filter: keep none; the key stands for all of them (see the module docstring)."""
    return [False] * len(entries)


def global_state() -> str:
    """The global switches a compiled graph depends on (grad mode, autocast, default dtype, deterministic
    algorithms, reduced-precision reductions, threads), as dynamo's global-state guard reads them."""
    guard = getattr(torch._C._dynamo.guards, "GlobalStateGuard", None)
    if guard is not None and hasattr(guard, "__getstate__"):
        return str(guard().__getstate__())
    return f"grad {torch.is_grad_enabled()}, default dtype {torch.get_default_dtype()}"  # pragma: no cover


def supported() -> bool:
    """Whether this torch has the AOT compile of modules."""
    from torch._dynamo.eval_frame import OptimizedModule

    return hasattr(OptimizedModule, "_aot_compile") and hasattr(torch._dynamo.config, "enable_aot_compile")


def describe(value: Any) -> str:
    """What a guard could check of an input: a tensor's shape, strides, dtype, device and grad flag, else its repr."""
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}{value.stride()}{value.dtype}{value.device}{value.requires_grad}"
    return repr(value)


@functools.cache
def package_digest() -> str:
    """Digest of this package's Python source: a saved piece from other code is never loaded. Read once per
    process."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def modules_digest(*modules: nn.Module) -> str:
    """Digest of the modules' structure and tensors' layouts (not their values: the graphs read those live)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, child in module.named_modules():
            digest.update(f"{name}:{type(child).__module__}.{type(child).__qualname__}\n".encode())
        for name, tensor in (*module.named_parameters(), *module.named_buffers()):
            digest.update(f"{name}:{describe(tensor)}\n".encode())
    return digest.hexdigest()


def environment(device: torch.device) -> str:
    """Versions and the device a compiled piece depends on (its index too: inductor's code names it)."""
    import diffusers

    card = ""
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        card = f"{torch.cuda.get_device_name(device)} sm{torch.cuda.get_device_capability(device)}"
    return f"torch {torch.__version__}, diffusers {diffusers.__version__}, {device} {card}"


class _MethodModule(nn.Module):
    """A method as a module's forward, for dynamo's AOT compile of modules. Its object is not a registered
    submodule: the graphs reach its modules and tensors through it, and read them at each call."""

    def __init__(self, method: Callable[..., Any]) -> None:
        super().__init__()
        self._method = [method]

    def forward(self, *args: Any) -> Any:
        return self._method[0](*args)


class SavedCompile:
    """A compiled piece of the editor that is kept whole in `folder`, one file per input signature.

    A call whose signature has a saved file loads it (no tracing) and runs it. Otherwise, while compiling, it
    compiles the piece with dynamo's AOT compile and saves it. When neither works, or after `stop_compiling`, it runs
    `fallback` (a `CompiledThenRunOnly` of the same method). `context` names what else the compiled code depends on
    (the editor's modules, dtype, memory format).
    """

    def __init__(
        self, method: Callable[..., Any], name: str, folder: Path, context: str, fallback: CompiledThenRunOnly
    ) -> None:
        self.name, self.folder, self.fallback = name, Path(folder), fallback
        self._module = _MethodModule(method)
        self._inductor_options = dict(INDUCTOR_OPTIONS)  # read once: the key names what the pieces compile with
        self._context = "\n".join(
            (environment_of(method), package_digest(), context, name, repr(self._inductor_options))
        )
        self._pieces: dict[str, Optional[Callable[..., Any]]] = {}
        self.loaded: list[str] = []
        self.load_seconds = 0.0
        """Time spent reading and loading saved files (their first calls not included)."""
        self.first_call_seconds = 0.0
        """Time spent in the first call of each loaded piece, until it returned (on a GPU: its kernels queued)."""
        self.saved: list[str] = []
        self.failures: list[str] = []

    @property
    def compiling(self) -> bool:
        return self.fallback.compiling

    @property
    def fallback_keys(self) -> list[str]:
        """Keys of calls that run `fallback` (no saved piece loaded or compiled for them, or its guards failed)."""
        return [key for key, piece in self._pieces.items() if piece is None]

    def stop_compiling(self) -> None:
        """From now on, load saved pieces but compile nothing new (see `CompiledThenRunOnly`)."""
        self.fallback.stop_compiling()

    def key(self, args: tuple[Any, ...]) -> str:
        text = "\n".join((self._context, global_state(), *map(describe, args)))
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.folder / f"{self.name}-{key}.bin"

    def __call__(self, *args: Any) -> Any:
        key = self.key(args)
        loaded_now = False  # this call is a loaded piece's first: its time goes to `first_call_seconds`
        if key not in self._pieces:
            piece = self._load(key)
            loaded_now = piece is not None
            if piece is None and self.compiling:
                piece = self._compile_and_save(key, args)
            self._pieces[key] = piece
        piece = self._pieces[key]
        if piece is None:
            return self.fallback(*args)
        started = time.perf_counter()
        try:
            return piece(*args)
        except RuntimeError as error:
            if "GuardManager check failed" not in str(error):  # guards a torch kept despite the filter
                raise
            self.failures.append(f"{self.name}: a saved piece's guards failed ({error}); using torch.compile")
            self._pieces[key] = None
            return self.fallback(*args)
        finally:
            if loaded_now:
                self.first_call_seconds += time.perf_counter() - started

    def _compiled_module(self) -> Any:
        options = {"guard_filter_fn": no_guards, **self._inductor_options}
        return torch.compile(self._module, fullgraph=True, dynamic=False, options=options)

    def _load(self, key: str) -> Optional[Callable[..., Any]]:
        path = self.path(key)
        if not path.is_file() or not supported():
            return None
        started = time.perf_counter()
        try:
            compiled = self._compiled_module()
            with torch._dynamo.config.patch(enable_aot_compile=True):
                compiled._load_aot_compiled_module(path.read_bytes())
        except Exception as error:  # noqa: BLE001 - any failure falls back to torch.compile
            self.failures.append(f"{self.name}: could not load {path.name} ({type(error).__name__}: {error})")
            return None
        finally:
            self.load_seconds += time.perf_counter() - started
        self.loaded.append(path.name)
        return compiled

    def _compile_and_save(self, key: str, args: tuple[Any, ...]) -> Optional[Callable[..., Any]]:
        if not supported():
            return None
        from torch._dynamo.aot_compile import ModelInput

        try:
            compiled = self._compiled_module()
            with torch._dynamo.config.patch(enable_aot_compile=True), sources_pickle_their_init_fields():
                compiled._aot_compile([ModelInput(args=args, kwargs={}, contexts=[])])
                data = compiled._save_aot_compiled_module()
        except Exception as error:  # noqa: BLE001 - any failure falls back to torch.compile
            self.failures.append(f"{self.name}: AOT compile failed ({type(error).__name__}: {str(error)[:300]})")
            return None
        try:
            write_atomically(self.path(key), lambda path: path.write_bytes(data))
            self.saved.append(self.path(key).name)
        except OSError as error:
            self.failures.append(f"{self.name}: could not save the compiled piece ({error})")
        return compiled


def plan_record(pieces: Sequence[SavedCompile], plan: str) -> Path:
    """The file that lists the saved files an editor's warm-up edits met for `plan` (its edit sizes and batch size), in
    the pieces' folder. Its name digests the plan, dynamo's global state and every piece's context, so a record of
    other code, modules or settings is never found."""
    text = "\n".join((plan, global_state(), *(piece._context for piece in pieces)))
    return pieces[0].folder / f"plan-{hashlib.sha256(text.encode()).hexdigest()[:40]}.txt"


def record_plan(pieces: Sequence[SavedCompile], plan: str) -> bool:
    """After warm-up edits of `plan`: list the files its calls loaded or saved (`plan_record`), when every call had
    one (no piece fell back or failed). Returns whether it wrote the record."""
    names = [name for piece in pieces for name in (*piece.loaded, *piece.saved)]
    if not names or any(piece.fallback_keys or piece.failures for piece in pieces):
        return False
    try:
        write_atomically(plan_record(pieces, plan), lambda path: path.write_text("\n".join(names) + "\n"))
    except OSError:
        return False
    return True


def plan_is_saved(pieces: Sequence[SavedCompile], plan: str) -> bool:
    """Whether an earlier warm-up of `plan` recorded its files (`record_plan`) and all of them are still there: the
    pieces' calls for that plan load them, and compile nothing."""
    if not pieces or not supported():
        return False
    record = plan_record(pieces, plan)
    try:
        names = record.read_text().split()
    except OSError:
        return False
    return bool(names) and all((record.parent / name).is_file() for name in names)


def environment_of(method: Callable[..., Any]) -> str:
    """`environment` of the device of the method's object (an editor with a `device`), else of the CPU."""
    device = getattr(getattr(method, "__self__", None), "device", torch.device("cpu"))
    return environment(torch.device(device))
