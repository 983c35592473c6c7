"""Reading a checkpoint that is a pickled whole module (``torch.save(model)``), without its code.

Such a file names the classes of the code that saved it (the reference's ``src.models.acoustic_model.AcousticModel``,
``torch.nn.modules.linear.Linear``, ...). ``torch.load(weights_only=True)`` refuses it, and unpickling it
normally would import that code and could run anything. Here a restricted unpickler rebuilds it instead:

- tensors and parameters are rebuilt from their storages as plain tensors (hooks and extra state dropped);
- plain containers (``OrderedDict``, ``set``), ``torch.Size`` and dtypes are allowed;
- a class from the reference's package (``src.``) or from ``torch.nn.modules.`` becomes a :class:`StandIn`,
  an object that only records the state the file gives it (``_parameters``, ``_buffers``, ``_modules``, ...);
- every other global (``os.system``, ``builtins.eval``, any function) is refused, naming it.

Nothing is imported and nothing from the file is called; :func:`module_state_dict` then walks the stand-ins'
``_modules`` / ``_parameters`` / ``_buffers`` into the state_dict layout ``module.state_dict()`` would give.
"""
from __future__ import annotations

import collections
import pickle
import types
from pathlib import Path

import torch
from torch._utils import _rebuild_tensor

STAND_IN_PACKAGES = ("src.", "torch.nn.modules.")  # classes read as stand-ins: the reference's and torch.nn's


class RefusedGlobal(pickle.UnpicklingError):
    """The file asks for a global that is neither allowed nor a stand-in class; the message names it."""


class StandIn:
    """An object of a class the file names but that is never imported: it keeps the state it is given."""

    file_class = "?"  # "module.Name" as the file spells it (set on each stand-in class)

    def __init__(self, *args, **kwargs):  # a class called by the pickle (REDUCE): record, run nothing
        self.__dict__["_arguments"] = (args, kwargs)

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.file_class} has state of type {type(state).__name__}, not a dict")
        self.__dict__.update(state)


def _tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 without hooks or metadata: a plain tensor over the storage."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state) without hooks or state: the parameter's tensor."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"a parameter's data is a {type(data).__name__}, not a tensor")
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,  # pickle protocol 2 (torch.save's) spells builtins the Python 2 way
    ("__builtin__", "frozenset"): frozenset,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED` globals, dtypes and stand-in classes; refuses every other global.
    (torch.load wraps it to resolve storage types and to load tensor data by persistent id.)"""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith(STAND_IN_PACKAGES) and name.isidentifier() and name[:1].isupper():
            key = (module, name)
            if key not in self._stand_ins:
                self._stand_ins[key] = type(name, (StandIn,), {"file_class": f"{module}.{name}"})
            return self._stand_ins[key]
        raise RefusedGlobal(f"refused global '{module}.{name}' (only tensors, plain containers and stand-ins for "
                            f"classes of {', '.join(STAND_IN_PACKAGES)} are read)")


def _pickle_module() -> types.ModuleType:
    """A pickle-like module for ``torch.load(pickle_module=...)`` whose Unpickler is the restricted one."""
    module = types.ModuleType("hear_embed_restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


def module_state_dict(stand_in: StandIn, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state_dict a module's ``state_dict()`` gives, from its stand-in: parameters, persistent buffers,
    and the same for each submodule under ``<name>.``."""
    state = stand_in.__dict__
    skipped = set(state.get("_non_persistent_buffers_set") or ())
    tensors = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skipped):
                continue
            if not isinstance(value, torch.Tensor):
                raise pickle.UnpicklingError(f"{stand_in.file_class} {group}['{name}'] is a {type(value).__name__}")
            tensors[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, StandIn):
            raise pickle.UnpicklingError(f"{stand_in.file_class} _modules['{name}'] is a {type(child).__name__}")
        tensors.update(module_state_dict(child, f"{prefix}{name}."))
    return tensors


def _as_state_dicts(obj):
    """Stand-ins of modules replaced by their state_dicts, inside dicts too (a module saved under a key)."""
    if isinstance(obj, StandIn):
        if not any(key in obj.__dict__ for key in ("_parameters", "_buffers", "_modules")):
            raise pickle.UnpicklingError(f"the file holds a {obj.file_class}, which is not a torch module")
        return module_state_dict(obj)
    if isinstance(obj, dict):
        return {key: _as_state_dicts(value) for key, value in obj.items()}
    return obj


def load_pickled_module(path: str | Path):
    """The content of a ``torch.save`` file whose modules are read as stand-ins and returned as state_dicts
    (``{key: tensor}``); raises :class:`RefusedGlobal` naming any other global the file asks for.

    ``weights_only=False`` is what lets torch use this restricted unpickler: every global still goes through
    :meth:`RestrictedUnpickler.find_class`, so nothing outside :data:`ALLOWED` and the stand-ins is reachable."""
    return _as_state_dicts(torch.load(path, map_location="cpu", weights_only=False, pickle_module=_pickle_module()))
