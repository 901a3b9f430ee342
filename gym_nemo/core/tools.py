"""``Tool``: a function the policy may call, with its OpenAI schema and argument validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema


class ToolArgumentError(ValueError):
    """The policy called a tool with arguments that do not match its schema."""


@dataclass(frozen=True)
class Tool:
    """A callable tool. ``fn(**arguments) -> str`` returns the text the policy sees as the result.

    ``parameters`` is a JSON Schema object; arguments are validated against it before ``fn`` runs, so
    tools never see wrong types. ``fn`` raises :class:`~gym_nemo.core.errors.InfraError` when the
    infrastructure behind it fails.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., str] = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        jsonschema.Draft202012Validator.check_schema(dict(self.parameters))
        object.__setattr__(self, "_validator", jsonschema.Draft202012Validator(dict(self.parameters)))

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI function-tool schema, as chat templates and the OpenAI API expect it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)},
        }

    def validate(self, arguments: Mapping[str, Any]) -> None:
        errors = sorted(self._validator.iter_errors(dict(arguments)), key=lambda e: list(e.path))  # type: ignore[attr-defined]
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "arguments"
            raise ToolArgumentError(f"invalid arguments for {self.name!r}: {where}: {errors[0].message}")

    def __call__(self, arguments: Mapping[str, Any]) -> str:
        self.validate(arguments)
        return self.fn(**arguments)
