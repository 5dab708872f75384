"""The ``prefect_server`` fixture: a real Prefect 3 server on PostgreSQL that records flow and task runs."""

from __future__ import annotations

import asyncio
import json
import urllib.request


def test_prefect_server_answers_health_and_stores_on_postgresql(prefect_server) -> None:
    with urllib.request.urlopen(f"{prefect_server.api_url}/health", timeout=5) as response:
        assert json.loads(response.read()) is True
    assert prefect_server.database_url.startswith("postgresql+asyncpg://")
    assert prefect_server.process.process.poll() is None


def test_flow_runs_and_task_runs_are_recorded_by_the_server(prefect_server) -> None:
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    @task
    def double(value: int) -> int:
        return value * 2

    @flow(name="fixture-smoke")
    def smoke(value: int) -> int:
        return double(value)

    with prefect_server.client_settings():
        state = smoke(21, return_state=True)
        assert state.is_completed() and state.result() == 42
        flow_run_id = state.state_details.flow_run_id

        async def stored():
            async with get_client() as client:
                assert str(client.api_url).startswith(prefect_server.api_url)
                run = await client.read_flow_run(flow_run_id)
                # Task runs arrive as events and are written by the server's task-run recorder service.
                only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
                for _ in range(100):
                    task_runs = await client.read_task_runs(flow_run_filter=only_this_run)
                    if task_runs and task_runs[0].state and task_runs[0].state.is_completed():
                        break
                    await asyncio.sleep(0.2)
                return run, task_runs

        run, task_runs = asyncio.run(stored())
    assert run.state.is_completed()
    assert run.parameters == {"value": 21}
    assert [task_run.name.split("-")[0] for task_run in task_runs] == ["double"]
    assert task_runs[0].state.is_completed()
