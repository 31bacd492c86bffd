"""The federated lab's MPC backend: aggregation on secret-shared updates.

``MPCAggregator`` has the interface of the lab's plaintext aggregator
(``aggregate(name, U, **kwargs) -> (aggregate, kept indices or None)``) and
runs the aggregator from :mod:`pgkernels.defenses` on two (or more) compute
parties plus a dealer, through :class:`pgkernels.serving.service.AggregationServers`:
the simulated clients' updates are secret-shared, the servers see only
shares, and only the aggregate comes back (with the selected clients, which
the lab reveals for its detection metrics).
"""

from ..defenses import registry
from ..serving import AggregationServers


class MPCAggregator:
    """``with MPCAggregator(world_size=2) as agg: run(config, aggregator=agg)``."""

    backend = "mpc"

    def __init__(self, world_size=2, dealer="ttp", timeout=1800.0):
        self.servers = AggregationServers(world_size=world_size, dealer=dealer, timeout=timeout)
        self.rounds = []  # per aggregation: seconds and bytes at server 0

    def __enter__(self):
        self.servers.start()
        return self

    def __exit__(self, *exc):
        self.servers.close()

    close = __exit__

    @staticmethod
    def supports(name):
        return name in registry.RULES

    @property
    def last_invalid(self):
        """Clients whose updates the servers found invalid in the last aggregation (dropped)."""
        return list(self.servers.last_invalid)

    def aggregate(self, name, U, **kwargs):
        agg, kept = self.servers.aggregate(name, U, **kwargs)
        self.rounds.append(dict(self.servers.last_stats[0]))
        return agg, kept

    def summary(self):
        """Mean seconds, rounds and MB sent per aggregation at server 0."""
        if not self.rounds:
            return {}
        k = len(self.rounds)
        return {"aggregations": k,
                "seconds_per_aggregation": sum(r["seconds"] for r in self.rounds) / k,
                "rounds_per_aggregation": sum(r["rounds"] for r in self.rounds) / k,
                "MB_sent_per_aggregation": sum(r["bytes_sent"] for r in self.rounds) / k / 1e6}
