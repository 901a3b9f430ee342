"""Exceptions shared across layers."""


class InfraError(RuntimeError):
    """Something outside the policy's control failed (sandbox, judge, server).

    Envs turn it into ``truncated=True`` with ``info["infra_error"]``: it is never a task failure.
    """
