"""Typed, frozen settings: one class per stage, built from the validated config by one constructor.

Defaults live in one place, config/config.schema.yaml (the validator fills them in), so the settings classes
declare types, not defaults. A rule passes its settings to the script as a plain, key-sorted dict
(``to_params``): Snakemake can only compare builtin values between runs, and sorted keys make the comparison
one of values, never of key order. Only the parts a rule reads travel (``to_params("corpus")``), so editing one
part never reruns rules that do not read it. The script rebuilds the object (``from_params``) and passes it
whole to one library call; ``extra="forbid"`` makes a field that is not declared an error, not a silent no-op.
"""

from __future__ import annotations

from typing import Any, Mapping, Self

from pydantic import BaseModel, ConfigDict


def sorted_data(value: Any) -> Any:
    """The same data with every mapping's keys sorted (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): sorted_data(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [sorted_data(v) for v in value]
    return value


class Settings(BaseModel):
    """Base of the stage settings and of their parts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], wildcards: Mapping[str, str]) -> Self:
        raise NotImplementedError

    def to_params(self, *parts: str) -> dict[str, Any]:
        """Plain, key-sorted data of the named fields (all fields when none are named)."""
        unknown = set(parts) - set(type(self).model_fields)
        if unknown:
            raise KeyError(f"{type(self).__name__} has no part(s) {sorted(unknown)}")
        return sorted_data(self.model_dump(mode="json", include=set(parts) or None))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Self:
        return cls.model_validate(dict(params))
