"""Agent workflows as rollout sources and environments (above policies, beside serve).

- :mod:`gym_nemo.agents.gateway`: :class:`Gateway`, a capturing OpenAI-compatible server with per-run URLs.
- :mod:`gym_nemo.agents.backends`: what answers its calls: :class:`PolicyBackend` (an in-process
  ``TokenPolicy``) or :class:`UpstreamBackend` (any OpenAI-compatible server, vLLM's token ids).
- :mod:`gym_nemo.agents.trajectory`: :func:`build_trajectory`, a run's calls -> token-exact segments -> one
  ``EpisodeRecord``.
- :mod:`gym_nemo.agents.episodes`: :func:`play_run`, one workflow run on one row through a gateway -> one record.
- :mod:`gym_nemo.agents.workflow_env`: :class:`AgentWorkflowEnv` (``nemo/AgentWorkflow-v0``).
- :mod:`gym_nemo.agents.workflows`: the three forms of a workflow (callable, import path, ``/run`` endpoint).

Needs the ``agents`` extra (FastAPI, uvicorn, aiohttp).
"""

from gym_nemo.agents.backends import Backend, PolicyBackend, UpstreamBackend
from gym_nemo.agents.calls import APIError, CallRecord
from gym_nemo.agents.episodes import play_run
from gym_nemo.agents.gateway import Gateway, Run
from gym_nemo.agents.trajectory import build_segments, build_trajectory, segment_records
from gym_nemo.agents.workflow_env import AgentWorkflowEnv, shared_gateway
from gym_nemo.agents.workflows import WorkflowError, resolve_workflow, run_workflow

__all__ = [
    "APIError",
    "AgentWorkflowEnv",
    "Backend",
    "CallRecord",
    "Gateway",
    "PolicyBackend",
    "Run",
    "UpstreamBackend",
    "WorkflowError",
    "build_segments",
    "build_trajectory",
    "play_run",
    "resolve_workflow",
    "run_workflow",
    "segment_records",
    "shared_gateway",
]
