"""Golden sets and the prompt gate: a prompt edit may not make production worse.

``prompts/golden/<name>.yaml`` lists inputs with checks on the output. :func:`evaluate` runs them
through the gateway and measures *schema validity* (share of cases with a valid object) and the
*check pass rate*. ``prompts/baselines.json`` records both per prompt, with the prompt version
and source hash they were measured on. :func:`gate` fails when a metric falls below its baseline,
or when the prompt changed without a version bump (its hash travels with every call, so an
unbumped edit would make two different prompts look like one version).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from spotline.llm.gateway import Gateway
from spotline.llm.types import LLMCallFailed

CHECK_OPS = ("equals", "not_equals", "one_of", "contains", "not_contains", "matches", "not_matches",
             "min_length", "max_length")


class Check(BaseModel):
    path: str = Field(description="dot path into the output object ('' = the whole output)")
    equals: Any = None
    not_equals: Any = None
    one_of: list[Any] | None = None
    contains: str | None = None
    not_contains: str | None = None
    matches: str | None = None
    not_matches: str | None = None
    min_length: int | None = None
    max_length: int | None = None

    def model_post_init(self, _: Any) -> None:
        if not any(op in self.model_fields_set for op in CHECK_OPS):
            raise ValueError(f"check on {self.path!r} has no operator (one of {', '.join(CHECK_OPS)})")

    def run(self, output: Any) -> str | None:
        """None if the check holds, else why not."""
        value = output
        for part in [p for p in self.path.split(".") if p]:
            if not isinstance(value, dict) or part not in value:
                return f"{self.path}: missing"
            value = value[part]
        s = value if isinstance(value, str) else json.dumps(value)
        ops = self.model_fields_set
        if "equals" in ops and value != self.equals:
            return f"{self.path}: {value!r} != {self.equals!r}"
        if "not_equals" in ops and value == self.not_equals:
            return f"{self.path}: must not be {self.not_equals!r}"
        if "one_of" in ops and value not in (self.one_of or []):
            return f"{self.path}: {value!r} not in {self.one_of}"
        if "contains" in ops and self.contains.lower() not in s.lower():
            return f"{self.path}: does not contain {self.contains!r}"
        if "not_contains" in ops and self.not_contains.lower() in s.lower():
            return f"{self.path}: contains {self.not_contains!r}"
        if "matches" in ops and not re.search(self.matches, s):
            return f"{self.path}: does not match {self.matches!r}"
        if "not_matches" in ops and re.search(self.not_matches, s):
            return f"{self.path}: matches {self.not_matches!r}"
        if "min_length" in ops and len(s) < self.min_length:
            return f"{self.path}: shorter than {self.min_length}"
        if "max_length" in ops and len(s) > self.max_length:
            return f"{self.path}: longer than {self.max_length}"
        return None


class Case(BaseModel):
    id: str
    input: dict[str, Any]
    checks: list[Check] = Field(default_factory=list)


class GoldenSet(BaseModel):
    prompt: str
    cases: list[Case]

    @classmethod
    def load(cls, prompts_dir: Path, name: str) -> "GoldenSet":
        path = Path(prompts_dir) / "golden" / f"{name}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"prompt {name!r} has no golden set at {path}")
        golden = cls.model_validate(yaml.safe_load(path.read_text()))
        if golden.prompt != name:
            raise ValueError(f"{path} is the golden set of {golden.prompt!r}, not {name!r}")
        return golden


@dataclass
class EvalReport:
    prompt: str
    version: str
    source_hash: str
    use: str
    models: str
    cases: int = 0
    valid: int = 0
    checks: int = 0
    checks_passed: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def schema_validity(self) -> float:
        return self.valid / self.cases if self.cases else 0.0

    @property
    def check_pass_rate(self) -> float:
        return self.checks_passed / self.checks if self.checks else 1.0

    def baseline_entry(self) -> dict[str, Any]:
        return {"version": self.version, "source_hash": self.source_hash, "models": self.models,
                "cases": self.cases, "schema_validity": round(self.schema_validity, 4),
                "check_pass_rate": round(self.check_pass_rate, 4)}


def evaluate(gateway: Gateway, name: str, use: str = "default") -> EvalReport:
    """Run the prompt's golden set on the use's *first* model only, uncached: a fallback model or
    yesterday's cached answers would hide exactly the regression the gate is there to catch."""
    spec = gateway.prompts.get(name)
    golden = GoldenSet.load(gateway.cfg.prompts_dir, name)
    primary, model = gateway.chain(use)[0]
    report = EvalReport(spec.name, spec.version, spec.source_hash, use, model.model_id)
    results = gateway.map([{"use": use, "prompt": spec, "variables": c.input, "cache": False, "models": [primary]}
                           for c in golden.cases])
    for case, result in zip(golden.cases, results):
        report.cases += 1
        report.checks += len(case.checks)
        if isinstance(result, LLMCallFailed):
            report.rows.append({"case": case.id, "valid": False, "checks": f"0/{len(case.checks)}",
                                "failures": str(result)[:300], "output": ""})
            continue
        report.valid += 1
        output = result.data if spec.output_schema is not None else result.text  # free-text prompts: the text
        failures = [f for f in (c.run(output) for c in case.checks) if f]
        report.checks_passed += len(case.checks) - len(failures)
        report.rows.append({"case": case.id, "valid": True, "checks": f"{len(case.checks) - len(failures)}/{len(case.checks)}",
                            "failures": "; ".join(failures) or "none", "output": json.dumps(output)[:300]})
    return report


def load_baselines(prompts_dir: Path) -> dict[str, dict[str, Any]]:
    path = Path(prompts_dir) / "baselines.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def record_baseline(prompts_dir: Path, report: EvalReport) -> None:
    baselines = load_baselines(prompts_dir)
    baselines[report.prompt] = report.baseline_entry()
    (Path(prompts_dir) / "baselines.json").write_text(json.dumps(baselines, indent=2, sort_keys=True) + "\n")


def gate(report: EvalReport, baseline: dict[str, Any] | None) -> list[str]:
    """Reasons the prompt change must not ship; empty when it may."""
    if baseline is None:
        return [f"{report.prompt}: no recorded baseline (run `spotline prompts eval {report.prompt} --record`)"]
    problems = []
    if baseline.get("models") and baseline["models"] != report.models:
        problems.append(f"{report.prompt}: the baseline was measured on {baseline['models']}, this run used "
                        f"{report.models}: record a baseline for this model (--record) to compare like with like")
    if report.source_hash != baseline.get("source_hash") and report.version == baseline.get("version"):
        problems.append(f"{report.prompt}: the prompt changed but its version is still {report.version}: bump it")
    for metric in ("schema_validity", "check_pass_rate"):
        now, then = round(getattr(report, metric), 4), float(baseline.get(metric, 0.0))
        if now < then:
            problems.append(f"{report.prompt}: {metric} fell to {now:.2%} from the baseline {then:.2%}")
    return problems


def gate_rows(reports: list[EvalReport], baselines: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The gate's table (one row per prompt: now vs baseline, verdict) and every problem found."""
    rows, problems = [], []
    for report in reports:
        found = gate(report, baselines.get(report.prompt))
        problems += found
        base = baselines.get(report.prompt, {})
        rows.append({"prompt": report.prompt, "version": report.version, "models": report.models,
                     "schema_validity": f"{report.schema_validity:.0%}",
                     "baseline_validity": f"{base['schema_validity']:.0%}" if base else "none",
                     "check_pass_rate": f"{report.check_pass_rate:.0%}",
                     "baseline_checks": f"{base['check_pass_rate']:.0%}" if base else "none",
                     "gate": "FAIL: " + "; ".join(found) if found else "pass"})
    return rows, problems
