"""Load profiles: the mix of songs a load run asks for.

A profile is a YAML file of weighted choices, one list per request field:

    duration_s: [{value: 30, weight: 3}, {value: 120, weight: 1}]
    variations: 2                      # a bare value: always this one
    model: [auto, sketch]              # a bare list: equal weights
    lora_ids: [{value: null, weight: 9}, {value: my-lora, weight: 1}]
    prompts: ["a sunny indie-pop song about sailing home", "rain on the harbour at night"]
    styles: [null, "dark techno, driving, 128 bpm"]

Every field is optional; the default profile (`LoadProfile()`) is 30 s × 2 variations, model
`auto`, no LoRA, description-mode prompts (template lyrics on the embedded default). Values are
checked against the API's own limits, so a profile the server would refuse is refused here, with
the field named.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

T = TypeVar("T")

DEFAULT_PROMPTS = (
    "a sunny indie-pop song about sailing home",
    "rain on the harbour at night",
    "an upbeat song about a road trip with old friends",
    "a quiet song about the first snow of winter",
)


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file, the field and the fix."""


class Weighted(BaseModel, Generic[T]):
    """One choice and how often it is drawn, relative to the field's other choices."""

    model_config = ConfigDict(extra="forbid")

    value: T
    weight: float = Field(1.0, gt=0, description="Relative frequency; > 0.")


def _as_choices(raw: Any) -> Any:
    """A bare value → one choice; a list of bare values → equal weights; `{value, weight}` items
    are kept as they are."""
    if not isinstance(raw, list):
        raw = [raw]
    return [item if isinstance(item, dict) else {"value": item} for item in raw]


Duration = Annotated[float, Field(ge=5, le=600)]
Variations = Annotated[int, Field(ge=1, le=4)]
ModelName = Annotated[str, Field(min_length=1, max_length=64)]
LoraId = Annotated[str, Field(min_length=1, max_length=128)] | None
Prompt = Annotated[str, Field(min_length=1, max_length=500)]
Style = Annotated[str, Field(min_length=1, max_length=1000)] | None


class LoadProfile(BaseModel):
    """The mix of songs: each request draws one value of every field, by weight."""

    model_config = ConfigDict(extra="forbid")

    duration_s: list[Weighted[Duration]] = Field(
        default_factory=lambda: [Weighted[float](value=30.0)],
        description="Song length in seconds (5–600).",
    )
    variations: list[Weighted[Variations]] = Field(
        default_factory=lambda: [Weighted[int](value=2)], description="Takes per song (1–4)."
    )
    model: list[Weighted[ModelName]] = Field(
        default_factory=lambda: [Weighted[str](value="auto")],
        description="'auto' or a model name the server serves.",
    )
    lora_ids: list[Weighted[LoraId]] = Field(
        default_factory=lambda: [Weighted[str | None](value=None)],
        description="A registered LoRA id, or null for none (the default).",
    )
    lora_scale: float = Field(1.0, ge=0, le=2, description="Adapter strength when a LoRA is used.")
    prompts: list[Weighted[Prompt]] = Field(
        default_factory=lambda: [Weighted[str](value=p) for p in DEFAULT_PROMPTS],
        description="Description-mode prompts (the server writes the lyrics).",
    )
    styles: list[Weighted[Style]] = Field(
        default_factory=lambda: [Weighted[str | None](value=None)],
        description="Free-text styles, or null to let the prompt name the style.",
    )
    instrumental: list[Weighted[bool]] = Field(
        default_factory=lambda: [Weighted[bool](value=False)], description="No vocals."
    )
    language: str = Field("en", pattern=r"^[a-z]{2}$", description="ISO 639-1 vocal language.")

    @field_validator(
        "duration_s",
        "variations",
        "model",
        "lora_ids",
        "prompts",
        "styles",
        "instrumental",
        mode="before",
    )
    @classmethod
    def _choices(cls, raw: Any) -> Any:
        choices = _as_choices(raw)
        if not choices:
            raise ValueError("empty: give at least one value (or leave the field out)")
        return choices

    def draw(self, rng: random.Random) -> dict[str, Any]:
        """One `POST /v1/songs` body, drawn with `rng` (same rng state, same body)."""
        body: dict[str, Any] = {
            "prompt": _pick(self.prompts, rng),
            "duration_s": _pick(self.duration_s, rng),
            "variations": _pick(self.variations, rng),
            "model": _pick(self.model, rng),
            "instrumental": _pick(self.instrumental, rng),
            "language": self.language,
            "seed": rng.randrange(2**31 - 8),  # variation k uses seed + k: stay below the cap
        }
        style = _pick(self.styles, rng)
        if style is not None:
            body["style"] = style
        lora = _pick(self.lora_ids, rng)
        if lora is not None:
            body["lora"] = {"id": lora, "scale": self.lora_scale}
        return body

    def describe(self) -> dict[str, Any]:
        """The profile as plain data (for the report): each field's values and weights."""
        return self.model_dump(mode="json")


def _pick(choices: list[Weighted[Any]], rng: random.Random) -> Any:
    if len(choices) == 1:
        # Still advance the rng, so adding a choice to one field never reshuffles the others.
        rng.random()
        return choices[0].value
    return rng.choices([c.value for c in choices], weights=[c.weight for c in choices])[0]


def _describe_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False):
        # Drop pydantic's internal location parts (the union branch a value was tried against).
        loc = ".".join(
            str(part)
            for part in item["loc"]
            if not str(part).startswith(("function-", "str", "int"))
        )
        lines.append(f"  {loc or '(top level)'}: {item['msg']}")
    return "\n".join(lines)


def parse_profile(data: Any, source: str = "profile") -> LoadProfile:
    """A profile from parsed YAML/JSON data; ProfileError names `source`, each field and the
    problem."""
    if data is None:
        return LoadProfile()
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile is a mapping of fields (duration_s, prompts, …)")
    try:
        return LoadProfile.model_validate(data)
    except ValidationError as error:
        fields = ", ".join(LoadProfile.model_fields)
        raise ProfileError(
            f"{source}: invalid load profile:\n{_describe_errors(error)}\n"
            f"(fields: {fields}; each takes a value, a list of values, or a list of "
            "{value, weight} items)"
        ) from None


def load_profile(path: str | Path | None) -> LoadProfile:
    """The profile in YAML file `path`, or the default profile when `path` is None."""
    if path is None:
        return LoadProfile()
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"--profile {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ProfileError(f"{path}: not valid YAML: {error}") from None
    return parse_profile(data, str(path))
