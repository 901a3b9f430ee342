"""Weight sync for token policies: load a state dict or checkpoint, and check it against the model it updates.

``HFPolicy.update_weights`` and ``VLLMPolicy.update_weights`` share these checks, so a bad update is refused
the same way by both, before any weight changes: every name must be one of the model's parameters (no extra
keys), every parameter must be given (tied parameters, e.g. an ``lm_head`` tied to the embeddings, count as
given when one of their names is), every shape must match, and the version must move forward.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

WeightsSource = Mapping[str, torch.Tensor] | str | Path


@dataclass(frozen=True)
class ParamSpec:
    """The names and shapes a model's state dict must have; ``aliases`` groups the names of tied tensors."""

    shapes: dict[str, tuple[int, ...]]
    aliases: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, model: torch.nn.Module) -> ParamSpec:
        """The spec of ``model``'s state dict (works on a ``meta``-device model too)."""
        state = model.state_dict(keep_vars=True)
        groups: dict[int, list[str]] = {}
        for name, tensor in state.items():
            groups.setdefault(id(tensor), []).append(name)
        return cls(
            shapes={name: tuple(tensor.shape) for name, tensor in state.items()},
            aliases=tuple(tuple(names) for names in groups.values()),
        )

    @classmethod
    def of_checkpoint(cls, model_dir: str | Path) -> ParamSpec:
        """The spec of the transformers model saved in ``model_dir``, built on the meta device (no weights)."""
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(model_dir))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return cls.of(model)

    def check(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """Raise ``ValueError`` listing missing or extra names or wrong shapes of ``shapes`` (name -> shape)."""
        extra = sorted(set(shapes) - set(self.shapes))
        missing = [names[0] for names in self.aliases if not any(n in shapes for n in names)]
        wrong = sorted(
            f"{k}: {tuple(v)} != {self.shapes[k]}"
            for k, v in shapes.items()
            if k in self.shapes and tuple(v) != self.shapes[k]
        )
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} key(s): {_few(missing)}")
        if extra:
            problems.append(f"{len(extra)} unexpected key(s): {_few(extra)}")
        if wrong:
            problems.append(f"{len(wrong)} wrong shape(s): {_few(wrong)}")
        if problems:
            raise ValueError("weights do not fit the policy's model (nothing was changed): " + "; ".join(problems))


def shapes_of(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a state dict (``TypeError`` for values that are not tensors)."""
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise TypeError(f"state dict values must be tensors; not for {_few(not_tensors)}")
    return {str(k): tuple(v.shape) for k, v in state.items()}


def checkpoint_shapes(folder: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Name -> shape of the ``*.safetensors`` shards in ``folder``, read from their headers (no tensor is
    loaded); None when the folder has no safetensors files."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                shapes[key] = tuple(fh.get_slice(key).get_shape())
    return shapes


def _few(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def check_version(current: int, new: Any) -> int:
    """``new`` as an int, if it is an int greater than ``current`` (policy versions only move forward)."""
    if isinstance(new, bool) or not isinstance(new, numbers.Integral):
        raise TypeError(f"version must be an int, got {new!r}")
    if int(new) <= current:
        raise ValueError(f"version {int(new)} does not move forward from the policy's version {current}")
    return int(new)


def load_weights(source: WeightsSource) -> dict[str, torch.Tensor]:
    """A state dict from a mapping (returned as a dict), a ``.safetensors`` file, a ``.bin``/``.pt`` file
    (``torch.load(weights_only=True)``) or a checkpoint folder (its ``*.safetensors`` shards, else its
    ``pytorch_model*.bin``), as ``save_pretrained`` writes it."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no weights at {path}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            part = load_file(str(file))
        else:
            part = torch.load(str(file), map_location="cpu", weights_only=True)
        if not isinstance(part, Mapping):
            raise ValueError(f"{file} does not hold a state dict")
        state.update(part)
    return state
