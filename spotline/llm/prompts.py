"""Prompts as code: versioned YAML files rendered for chat models or completion-style base models.

A prompt file (``prompts/<name>.yaml``) holds its name, version, the model family it was tuned
for, an optional system text, a Jinja2 template for one input, the JSON schema of its output and
few-shot examples. Code asks for a prompt by name; every call and artifact carries the version
and the hash of what was actually sent.

Base models (Gemma 3 270M here) have no chat template, so the same prompt also renders as one
completion text: the system text, then each example as ``### Input`` / ``### Output`` blocks, then
the real input and an open ``### Output`` for the model to continue.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jsonschema
import yaml
from pydantic import BaseModel, Field, PrivateAttr, field_validator

from spotline.llm.types import Message

_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


class Example(BaseModel):
    input: dict[str, Any]
    output: Any


class PromptSpec(BaseModel):
    name: str
    version: str
    description: str = ""
    family: str = Field("", description="model family the wording and examples were tuned for")
    system: str = ""
    template: str
    output_schema: dict[str, Any] | None = None
    examples: list[Example] = Field(default_factory=list)
    max_tokens: int | None = None
    temperature: float = 0.0
    _compiled: Any = PrivateAttr(None)
    _shots: list[tuple[str, str]] = PrivateAttr(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, v: Any) -> str:
        return str(v)

    def model_post_init(self, _: Any) -> None:
        if self.output_schema is not None:
            jsonschema.Draft202012Validator.check_schema(self.output_schema)
            for i, ex in enumerate(self.examples):
                errors = list(jsonschema.Draft202012Validator(self.output_schema).iter_errors(ex.output))
                if errors:
                    raise ValueError(f"prompt {self.name} example {i} violates its own schema: {errors[0].message}")
        self._compiled = _JINJA.from_string(self.template)  # syntax errors surface when the file loads
        self._shots = [(self._compiled.render(**ex.input).strip(), _dump(ex.output)) for ex in self.examples]

    @property
    def source_hash(self) -> str:
        """Hash of the prompt definition: if it changes, the version must change too."""
        return _hash(self.model_dump(mode="json"))

    def render(self, variables: dict[str, Any]) -> "RenderedPrompt":
        try:
            user = self._compiled.render(**variables).strip()
        except jinja2.UndefinedError as exc:
            raise ValueError(f"prompt {self.name} v{self.version}: {exc}") from None
        shots = self._shots
        messages: list[Message] = []
        if self.system:
            messages.append(Message("system", self.system.strip()))
        for q, a in shots:
            messages += [Message("user", q), Message("assistant", a)]
        messages.append(Message("user", user))
        blocks = [self.system.strip()] if self.system else []
        blocks += [f"### Input\n{q}\n### Output\n{a}" for q, a in shots]
        blocks.append(f"### Input\n{user}\n### Output\n")
        text = "\n\n".join(blocks)
        return RenderedPrompt(self, tuple(messages), text)


@dataclass(frozen=True)
class RenderedPrompt:
    spec: PromptSpec | None  # None for ad-hoc messages / text
    messages: tuple[Message, ...]
    text: str
    stop: tuple[str, ...] = ("### Input", "\n\n\n")

    @property
    def hash(self) -> str:
        schema = self.spec.output_schema if self.spec else None
        return _hash({"messages": [m.__dict__ for m in self.messages], "text": self.text, "schema": schema})


class PromptLibrary:
    """Loads ``*.yaml`` prompts from a folder once; ``get(name)`` returns the current version."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._prompts: dict[str, PromptSpec] | None = None

    def _load(self) -> dict[str, PromptSpec]:
        if self._prompts is None:
            prompts = {}
            for path in sorted(self.folder.glob("*.yaml")):
                try:
                    spec = PromptSpec.model_validate(yaml.safe_load(path.read_text()))
                except Exception as exc:
                    raise ValueError(f"{path}: {exc}") from exc
                if spec.name != path.stem:
                    raise ValueError(f"{path}: name {spec.name!r} must match the file name")
                prompts[spec.name] = spec
            self._prompts = prompts
        return self._prompts

    def names(self) -> list[str]:
        return sorted(self._load())

    def get(self, name: str) -> PromptSpec:
        try:
            return self._load()[name]
        except KeyError:
            raise KeyError(f"no prompt {name!r} in {self.folder} (have: {', '.join(self.names())})") from None


def _dump(obj: Any) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
