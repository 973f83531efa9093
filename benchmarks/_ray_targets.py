"""What bench_scale's Ray row runs on Ray: in a module, so that Ray workers import it."""

from __future__ import annotations

import ray

from isolation import Isolation
from minions import Resource


class Echo(Resource, isolated=Isolation(backend="ray", replicas=1, num_cpus=0)):
    async def echo(self, text: str) -> str:
        return text


@ray.remote(num_cpus=0)
class BareEcho:
    """The same work as a bare Ray actor: what a Ray user would call directly."""

    async def echo(self, text: str) -> str:
        return text


bare_echo_actor = BareEcho
