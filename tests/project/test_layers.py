"""The layers a newcomer relies on, checked on the code itself.

spotline/ is plain Python (no Prefect, no flows, tasks, runtime or entry points), tasks/ holds
only @task units, flows/ define no tasks of their own, and every Spotline error says whether it
is worth retrying by deriving from exactly one of the two bases.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

import pytest

from tests.conftest import ROOT

FORBIDDEN_IN_LIBRARY = ("prefect", "prefect_aws", "tasks", "flows", "runtime", "cli", "deployments")


def _imports(path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (imports inside functions count too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_nothing_under_spotline_imports_prefect_tasks_flows_or_entry_points():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "spotline").rglob("*.py"))
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN_IN_LIBRARY
    ]
    assert not offenders, "spotline/ must stay plain Python:\n" + "\n".join(offenders)


def test_the_layer_check_would_catch_an_import_inside_a_function(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from prefect import flow\n    import flows.ingest\n")
    assert [name for _, name in _imports(sneaky)] == ["prefect", "flows.ingest"]


def _modules(package: str):
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        yield importlib.import_module(info.name)


def test_tasks_hold_only_task_units():
    from prefect import Task

    for module in _modules("tasks"):
        defined = {name: obj for name, obj in vars(module).items()
                   if getattr(obj, "__module__", None) == module.__name__ and not name.startswith("_")}
        not_tasks = [name for name, obj in defined.items() if callable(obj) and not isinstance(obj, Task)]
        assert not not_tasks, f"{module.__name__} defines non-task callables {not_tasks}: move them to runtime/ or spotline/"
        assert any(isinstance(obj, Task) for obj in defined.values()), f"{module.__name__} holds no task"


def test_flows_define_no_tasks_of_their_own():
    from prefect import Task

    for module in _modules("flows"):
        own = [name for name, obj in vars(module).items() if isinstance(obj, Task)
               and getattr(obj.fn, "__module__", None) == module.__name__]
        assert not own, f"{module.__name__} defines tasks {own}: they belong in tasks/"


def _spotline_errors() -> list[type[BaseException]]:
    found = {}
    for module in _modules("spotline"):
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__.startswith("spotline."):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


# Bases that exist to be caught, never raised as such: each raise site picks a concrete subclass.
CATCH_ONLY = {"SpotlineError", "LLMError", "LLMCallFailed", "BulkWriteError"}


def test_every_spotline_error_is_transient_or_permanent_never_both():
    from spotline.errors import PermanentError, TransientError

    errors = _spotline_errors()
    assert len(errors) >= 15  # the walk found the library's errors, not an empty list
    undecided, both = [], []
    for cls in errors:
        t, p = issubclass(cls, TransientError), issubclass(cls, PermanentError)
        if t and p:
            both.append(cls.__qualname__)
        elif not (t or p) and cls.__name__ not in CATCH_ONLY:
            undecided.append(f"{cls.__module__}.{cls.__qualname__}")
    assert not both, f"errors that are both transient and permanent: {both}"
    assert not undecided, f"errors that do not say whether to retry: {undecided}"


@pytest.mark.parametrize("response, kind", [
    ({"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "transient"),
    ({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "transient"),
    ({"Error": {"Code": "Whatever"}, "ResponseMetadata": {"HTTPStatusCode": 429}}, "transient"),
    ({"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "transient"),
    ({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "permanent"),
    ({"Error": {"Code": "ValidationException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "permanent"),
])
def test_aws_errors_are_classified_by_code_and_status_in_one_place(response, kind):
    from botocore.exceptions import ClientError

    from spotline.errors import classify

    assert classify(ClientError(response, "AnyOperation")) == kind


def test_the_task_retry_policy_retries_transient_and_unknown_but_not_permanent():
    from prefect.states import Failed

    from runtime.retry import worth_retrying
    from spotline.embedding.base import EmbeddingUnavailable
    from spotline.index.base import IndexModelMismatch
    from spotline.llm.types import CallUsage, call_failed

    def failed_with(exc):
        return Failed(data=exc)

    busy = call_failed("default", [CallUsage(use="default", provider="p", model="m", outcome="unavailable")])
    refused = call_failed("default", [CallUsage(use="default", provider="p", model="m", outcome="rejected")])
    assert worth_retrying(None, None, failed_with(EmbeddingUnavailable("pool restarting")))
    assert worth_retrying(None, None, failed_with(OSError("disk hiccup")))  # unknown: spend the budget
    assert worth_retrying(None, None, failed_with(busy))
    assert not worth_retrying(None, None, failed_with(refused))
    assert not worth_retrying(None, None, failed_with(IndexModelMismatch("i", "a", 1, "b", 2)))
    assert not worth_retrying(None, None, failed_with(ValueError("a bug")))
