"""The HTTP API against its own OpenAPI, fuzzed with schemathesis (bounded: a few valid and a few
invalid examples per operation): no request it can generate gets a 5xx, invalid ones are refused,
and every response conforms to the documented status codes, content types and schemas (errors
included: they are documented in the one error shape). Runs on the real services and stores under
ASGI, with a key, no Ray.

Each operation is driven through Hypothesis directly (schemathesis's pytest plugin does not load
under this pytest), so one test reports every operation that broke its contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation import GenerationMode

from serve.config import resolve_config
from serve.http.app import create_app
from tests.http_graph import api_services

KEY = {"Authorization": "Bearer fuzz-key"}
EXAMPLES_PER_OPERATION = 12


def test_the_api_keeps_its_contract(tmp_path: Path) -> None:
    config = resolve_config(
        {
            "storage": {"data_dir": str(tmp_path)},
            "auth": {"api_keys": ["fuzz-key"]},
            # No conductor runs here: Suno calls that wait for audio give up at once.
            "api": {"suno_wait_audio_s": 0.2},
            # The contract, not the tag model (it has its own tests): in this in-process graph
            # the semantic engine's first load would outlast /healthz's deadline.
            "tags": {"engine": "lexical"},
        }
    )
    services = api_services(config)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(lambda: services))
    broken: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25  # every documented route
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def keeps_contract(case: Any) -> None:
                # Every check but "schema-valid data is accepted": some rules are not in the
                # schema (one of prompt, lyrics or style; a model this server serves), and a
                # request breaking them is rightly a 422 naming the field.
                case.call_and_validate(headers=KEY, excluded_checks=[positive_data_acceptance])

            try:
                keeps_contract()
            except Unsatisfiable:  # no invalid request exists (an operation without inputs)
                assert mode is GenerationMode.NEGATIVE
            except (Exception, BaseExceptionGroup) as error:  # noqa: BLE001 - collect them all
                broken[f"{operation.label} ({mode.value})"] = str(error)[:2000]
    assert not broken, "\n\n".join(f"{label}:\n{error}" for label, error in broken.items())
