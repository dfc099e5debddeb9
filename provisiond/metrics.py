"""Prometheus metrics for `/metrics`, with prometheus_client (the text exposition format).

Three sources, each counted where it already reports:
- `serve`'s own threads (DHCP decisions, finished TFTP transfers) and the HTTP worker (requests,
  barrier checks) are two processes, so counters live in prometheus_client's multiprocess
  files (`PROMETHEUS_MULTIPROC_DIR`, set by `serve` before this module is imported; wiped at
  each start) and the scrape sums them;
- what the store already records (node states, power calls with their latency, agent steps,
  nodes waiting at a barrier, the discovery list) is read at scrape time, so it survives
  restarts and also counts calls made by other processes (`provisiond provision`);
- without a multiprocess directory (an app built in-process, e.g. by tests) the counters live
  in the app's own registry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector

from provisiond.http.agent import AGENT_STATUSES
from provisiond.lifecycle import State
from provisiond.metrics_dir import MULTIPROC_ENV
from provisiond.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
POWER_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TFTP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def multiprocess() -> bool:
    """Whether counters go to the shared files (prometheus_client chose this at import)."""
    return values.ValueClass is not values.MutexValue and bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The counters of one process. In multiprocess mode they belong to no registry (their
    values are files); otherwise to `registry`."""

    def __init__(self) -> None:
        self.registry: CollectorRegistry | None = None if multiprocess() else CollectorRegistry()
        reg = self.registry
        self.dhcp_requests = Counter("provisiond_dhcp_requests", "DHCP requests received, by "
                                     "message type", ["type"], registry=reg)
        self.dhcp_answers = Counter("provisiond_dhcp_answers", "What the DHCP server did with "
                                    "each request (offer, ack, nak, ignore...)", ["action"],
                                    registry=reg)
        self.tftp_transfers = Counter("provisiond_tftp_transfers", "Finished TFTP transfers, by "
                                      "outcome (ok, timeout, error)", ["outcome"], registry=reg)
        self.tftp_bytes = Counter("provisiond_tftp_bytes", "Bytes sent by TFTP transfers",
                                  registry=reg)
        self.tftp_retransmits = Counter("provisiond_tftp_retransmits", "TFTP blocks sent again",
                                        registry=reg)
        self.tftp_seconds = Histogram("provisiond_tftp_transfer_seconds", "Duration of TFTP "
                                      "transfers", buckets=TFTP_BUCKETS, registry=reg)
        self.http_requests = Counter("provisiond_http_requests", "HTTP requests, by route "
                                     "(the URL rule, not the path) and status",
                                     ["route", "method", "status"], registry=reg)
        self.barrier_checks = Counter("provisiond_barrier_checks", "Barrier evaluations asked "
                                      "by agents, by result (met, waiting, failed)", ["result"],
                                      registry=reg)

    def dhcp(self, message_type: str, action: str) -> None:
        self.dhcp_requests.labels(message_type).inc()
        self.dhcp_answers.labels(action).inc()

    def tftp(self, outcome: str, nbytes: int, retransmits: int, seconds: float) -> None:
        self.tftp_transfers.labels(outcome.split(":", 1)[0]).inc()
        self.tftp_bytes.inc(nbytes)
        self.tftp_retransmits.inc(retransmits)
        self.tftp_seconds.observe(seconds)

    def http(self, route: str, method: str, status: int) -> None:
        self.http_requests.labels(route, method, str(status)).inc()

    def exposition(self, store: Store) -> bytes:
        """The text format of everything: this process's (or all processes') counters and
        the store's figures."""
        scrape = CollectorRegistry(auto_describe=False)
        if self.registry is None:
            MultiProcessCollector(scrape)
        else:
            scrape.register(self.registry)
        scrape.register(StoreCollector(store))
        return generate_latest(scrape)


class StoreCollector:
    """Figures the store already holds, read at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        store = self.store
        nodes = GaugeMetricFamily("provisiond_nodes", "Nodes by state", labels=["state"])
        counts = {state: 0 for state in State}
        for record in store.nodes():
            counts[record.state] += 1
        for state, count in counts.items():
            nodes.add_metric([state.value], count)
        yield nodes

        calls = CounterMetricFamily("provisiond_power_calls", "IPMI power actions per node, by "
                                    "action and result (recorded by provision/power)",
                                    labels=["action", "result"])
        latency = HistogramMetricFamily("provisiond_power_call_seconds", "Duration of a power "
                                        "action on one node (retries included)", labels=["action"])
        by_action: dict[str, list[float]] = {}
        results: dict[tuple[str, str], int] = {}
        for action, ok, elapsed in store.power_calls():
            key = (action, "ok" if ok else "failed")
            results[key] = results.get(key, 0) + 1
            by_action.setdefault(action, []).append(elapsed)
        for (action, result), count in sorted(results.items()):
            calls.add_metric([action, result], count)
        for action, durations in sorted(by_action.items()):
            buckets = [(str(bound), sum(d <= bound for d in durations)) for bound in POWER_BUCKETS]
            buckets.append(("+Inf", len(durations)))
            latency.add_metric([action], buckets, sum(durations))
        yield calls
        yield latency

        steps = CounterMetricFamily("provisiond_agent_reports", "Agent step reports, by status "
                                    "(started, ok, changed, failed, ...)", labels=["status"])
        for kind, count in sorted(store.event_kind_counts("agent:").items()):
            status = kind.removeprefix("agent:")
            if status in AGENT_STATUSES:  # not agent:fact, agent:layout...
                steps.add_metric([status], count)
        yield steps

        yield GaugeMetricFamily("provisiond_barrier_waiting_nodes", "Nodes whose agent waits "
                                "at a barrier now", value=store.waiting_count())
        yield GaugeMetricFamily("provisiond_discovered_macs", "MACs seen by DHCP that are not "
                                "in the inventory (the discovery list)",
                                value=store.seen_macs_count())
