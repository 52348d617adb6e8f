"""Prometheus metrics: every metric's name, help text and labels, in one place.

Two sets, each on a `CollectorRegistry` of its own that the composition root makes and passes
down through constructors (never prometheus_client's global default registry, so that two stacks
in one process, as in the tests, count apart):

- `GatewayMetrics`: the gateway, its binds and handlers, the store's auto-pipeline and the
  self-care API; served at `/metrics` on the gateway's HTTP server (the self-care API's);
- `SimulatorMetrics`: the SMSC simulator; served at `/metrics` on the simulator's HTTP server.

Label values are bounded by the code, never by the traffic: route and handler names, SMPP status
and message-state names, HTTP route templates (not paths), reasons from fixed tables. An MSISDN,
a message id or a raw path is never a label value.

Cost on the hot path: counters and histograms are plain numbers in dicts by label values
(`_Family`), turned into samples only when scraped, so counting is one dict update. What needs a look around (windows,
binds, dialogues open, MTs in flight) is a `ScrapeGauge`, read only when Prometheus scrapes; what
needs Redis (the outbox) is refreshed by a periodic task of the gateway.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "ScrapeGauge", "SimulatorMetrics", "exposition", "message_state_label",
           "status_name"]

# The `_created` series double a scrape's size and no dashboard here reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# The classic text format, which every Prometheus reads (2.x and 3.x alike); our names need nothing newer.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OTHER = "other"  # the label value of anything outside a fixed table

# SMPP command_status values by name (SMPP 3.4 §5.1.3), for labels: a peer may send any 32-bit
# value, and only these become their own label value (the rest are "other").
_STATUS_NAMES = {
    0x00: "ESME_ROK", 0x01: "ESME_RINVMSGLEN", 0x02: "ESME_RINVCMDLEN", 0x03: "ESME_RINVCMDID",
    0x04: "ESME_RINVBNDSTS", 0x05: "ESME_RALYBND", 0x08: "ESME_RSYSERR", 0x0A: "ESME_RINVSRCADR",
    0x0B: "ESME_RINVDSTADR", 0x0C: "ESME_RINVMSGID", 0x0D: "ESME_RBINDFAIL", 0x0E: "ESME_RINVPASWD",
    0x0F: "ESME_RINVSYSID", 0x14: "ESME_RMSGQFUL", 0x43: "ESME_RINVESMCLASS", 0x58: "ESME_RTHROTTLED",
    0x64: "ESME_RX_T_APPN", 0x65: "ESME_RX_P_APPN", 0x66: "ESME_RX_R_APPN", 0x67: "ESME_RQUERYFAIL",
    0xC0: "ESME_RINVOPTPARSTREAM", 0xC2: "ESME_RINVPARLEN", 0xC4: "ESME_RINVOPTPARAMVAL",
    0xFE: "ESME_RDELIVERYFAILURE", 0xFF: "ESME_RUNKNOWNERR",
}
_MESSAGE_STATES = frozenset({"ENROUTE", "DELIVERED", "EXPIRED", "DELETED", "UNDELIVERABLE", "ACCEPTED", "UNKNOWN",
                             "REJECTED"})


def status_name(status: int) -> str:
    """`ESME_ROK` for 0; "other" for a status outside SMPP 3.4's table (labels stay bounded)."""
    return _STATUS_NAMES.get(status, OTHER)


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format (served with `CONTENT_TYPE`)."""
    return prometheus_client.generate_latest(registry)


class _Family:
    """A labelled counter or histogram kept in plain Python numbers, turned into Prometheus samples
    only when scraped (`collect`): counting on the hot path is a dict update, not prometheus_client's
    `labels()` lookup, argument checks and a lock per child (per bucket, for a histogram's observe).

    Updated from the event loop's thread only (the gateway and the simulator are single-threaded
    asyncio; the costly-work threads count nothing)."""

    __slots__ = ("_bounds", "_counts", "_sums", "_values", "documentation", "labelnames", "name")

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 buckets: tuple[float, ...] | None = None) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self._values: dict[tuple[str, ...], float] = {}  # a counter's children
        self._bounds = buckets  # a histogram's upper bounds (None: a counter)
        self._counts: dict[tuple[str, ...], list[int]] = {}  # a histogram's children: count per bucket, +Inf last
        self._sums: dict[tuple[str, ...], float] = {}
        if not labelnames:
            self.start_at_zero()

    def inc(self, *labels: str) -> None:
        values = self._values
        try:
            values[labels] += 1.0
        except KeyError:
            values[labels] = 1.0

    def start_at_zero(self, *values: str) -> None:
        """Show these label values at 0 before anything happened (a panel then says 0, not "no data");
        with no labels, the one child."""
        for labels in [(value,) for value in values] if values else [()]:
            self._child(labels)

    def _child(self, labels: tuple[str, ...]) -> None:
        if self._bounds is None:
            self._values.setdefault(labels, 0.0)
        elif labels not in self._counts:
            self._counts[labels] = [0] * (len(self._bounds) + 1)
            self._sums[labels] = 0.0

    def observe(self, value: float, *labels: str) -> None:
        counts = self._counts.get(labels)
        if counts is None:
            self._child(labels)
            counts = self._counts[labels]
        counts[bisect_left(self._bounds, value)] += 1  # type: ignore[arg-type]
        self._sums[labels] += value

    def value(self, *labels: str) -> float:
        """A counter child's value (0 when never counted)."""
        return self._values.get(labels, 0.0)

    def family(self, with_samples: bool = True) -> Metric:
        if self._bounds is None:
            counter = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
            if with_samples:
                for labels, count in list(self._values.items()):
                    counter.add_metric(list(labels), count)
            return counter
        histogram = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if with_samples:
            uppers = [repr(float(bound)) for bound in self._bounds] + ["+Inf"]  # as prometheus_client writes them
            for labels, counts in list(self._counts.items()):
                cumulative = list(itertools.accumulate(counts))
                histogram.add_metric(list(labels), list(zip(uppers, cumulative, strict=True)), self._sums[labels])
        return histogram


ScrapeReader = Callable[[], Iterable[tuple[tuple[str, ...], float]]]


class ScrapeGauge:
    """A gauge read when Prometheus scrapes, from the part that knows the values (nothing to keep
    up to date on the hot path). The owner sets `read`: it yields (label values, value) pairs."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.read: ScrapeReader | None = None

    def family(self, with_samples: bool = True) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if with_samples and self.read is not None:
            for labels, value in self.read():
                family.add_metric(list(labels), value)
        return family


class _Collected(Collector):
    """What the registry reads at a scrape: the counters and histograms, then the scrape gauges."""

    def __init__(self, parts: list[_Family | ScrapeGauge]) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield part.family()

    def describe(self) -> Iterator[Metric]:  # names only: the registry checks for duplicates without reading
        for part in self.parts:
            yield part.family(with_samples=False)


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._scrape_gauges: list[ScrapeGauge] = []
        self._families: list[_Family] = []

    def _counter(self, name: str, documentation: str, *labels: str) -> _Family:
        family = _Family(name, documentation, labels)
        self._families.append(family)
        return family

    def _histogram(self, name: str, documentation: str, labels: tuple[str, ...],
                   buckets: tuple[float, ...]) -> _Family:
        family = _Family(name, documentation, labels, buckets)
        self._families.append(family)
        return family

    def _scrape_gauge(self, name: str, documentation: str, *labels: str) -> ScrapeGauge:
        gauge = ScrapeGauge(name, documentation, labels)
        self._scrape_gauges.append(gauge)
        return gauge

    def _register_scrape_gauges(self) -> None:
        """Register what was declared: the counters and histograms, then the scrape gauges."""
        self.registry.register(_Collected([*self._families, *self._scrape_gauges]))


class GatewayMetrics(_Metrics):
    """What the gateway process counts. Methods are what the parts call; attributes are the metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        # ---- MOs and handlers
        self.mo = self._counter(
            "ussdgw_mo", "MOs taken from the SMSC, by channel (sms, ussd), route (the handler that answered; "
            "'-' before routing) and outcome: applied, duplicate (a redelivery answered again), part (a part of a "
            "long SMS, kept until the rest arrives), deferred (Redis away: ESME_RX_T_APPN), failed (the handler "
            "raised: ESME_RX_T_APPN), throttled (its costly work, a password's scrypt, would wait too long: "
            "ESME_RTHROTTLED, the SMSC brings it back), refused (no reply could be addressed: a permanent error)",
            "channel", "route", "outcome")
        self.mo_seconds = self._histogram(
            "ussdgw_mo_duration_seconds", "From a deliver_sm read to its handler's commit done (the "
            "deliver_sm_resp leaves then), by channel", ("channel",), LATENCY_BUCKETS)
        self.receipts = self._counter(
            "ussdgw_receipts", "Delivery receipts received, by the MT's final state (SMPP message_state name)",
            "state")
        # ---- SMPP
        self.deliver_sm_resp = self._counter(
            "ussdgw_smpp_deliver_sm_resp", "deliver_sm_resp (and data_sm_resp) sent to the SMSC, by command_status",
            "status")
        self.submit_sm_resp = self._counter(
            "ussdgw_smpp_submit_sm_resp", "submit_sm_resp received from the SMSC, by command_status "
            "(ESME_RTHROTTLED and ESME_RMSGQFUL are retried after a pause)", "status")
        self.submit_sm_errors = self._counter(
            "ussdgw_smpp_submit_sm_errors", "submit_sm that got no response, by reason (timeout, link_down); each "
            "is sent again", "reason")
        self.submit_sm_seconds = self._histogram(
            "ussdgw_smpp_submit_sm_duration_seconds", "From a submit_sm handed to the bind (its wait for a "
            "window slot included) to its submit_sm_resp", (), LATENCY_BUCKETS)
        self.bind_events = self._counter(
            "ussdgw_smpp_bind_events", "Bind life events, by event: bound, refused (the SMSC said no), link_down "
            "(the connection ended or failed; reconnected with backoff)", "event")
        self.bind_up = self._scrape_gauge(
            "ussdgw_smpp_bind_up", "1 while the bind is bound, else 0 (binds are named bind-1 .. bind-N)", "bind")
        self.window_size = self._scrape_gauge(
            "ussdgw_smpp_window_size", "Requests that may be outstanding at once on the bind", "bind")
        self.window_in_use = self._scrape_gauge(
            "ussdgw_smpp_window_in_use", "Requests outstanding on the bind now (submit_sm waiting for a response)",
            "bind")
        self.window_waiters = self._scrape_gauge(
            "ussdgw_smpp_window_waiters", "Requests waiting for a free window slot on the bind", "bind")
        # ---- MTs
        self.mt_sending = self._scrape_gauge(
            "ussdgw_mt_sending", "MTs this gateway process is submitting now (waiting for a bind, the window, a "
            "throttling pause or a response)")
        self.mt_resent = self._counter(
            "ussdgw_mt_resent", "MTs submitted again without knowing whether the SMSC had taken the first "
            "copy (then the phone gets it twice), by reason: answer_lost (a submit_sm whose response never "
            "came: a timeout, a link cut), reclaimed (a dead gateway's MT: it may have been submitted and not "
            "recorded)", "reason")
        self.mt_resent.start_at_zero("answer_lost", "reclaimed")
        self.costly_pending = self._scrape_gauge(
            "ussdgw_costly_pending", "Costly tasks (password hashes) running or waiting for this process's "
            "bounded pool; one that would wait longer than costly_max_wait_s is refused (outcome throttled)")
        self.mt_oldest_age = self._scrape_gauge(
            "ussdgw_mt_oldest_age_seconds", "Age of the oldest MT this gateway process is still submitting, from "
            "when it took it (its commit here, or its recovery from a dead gateway); 0 when none")
        self.outbox_depth = Gauge(
            "ussdgw_outbox_depth", "MTs queued in Redis or being submitted (entries of the MT recovery index), "
            "counted every 10 s; every gateway reports the same Redis-wide figure", registry=self.registry)
        self.outbox_overdue = Gauge(
            "ussdgw_outbox_overdue", "Of those, MTs past their lease's end (their sender late or dead: recovery "
            "takes them within a few seconds)", registry=self.registry)
        # ---- store
        self.store_batch_size = self._histogram(
            "ussdgw_store_pipeline_batch_size", "Commands per auto-pipeline round trip to Redis (the more load, "
            "the bigger)", (), BATCH_SIZE_BUCKETS)
        self.store_batch_seconds = self._histogram(
            "ussdgw_store_pipeline_batch_duration_seconds", "One auto-pipeline round trip: the batch written, "
            "every reply read", (), BATCH_SECONDS_BUCKETS)
        self.store_unavailable = self._counter(
            "ussdgw_store_unavailable", "Work turned away because Redis was unreachable (StoreUnavailable), by "
            "what was being done: mo, receipt, mt (state after submit not recorded), api (answered 503)",
            "operation")
        self.store_redirections = self._counter(
            "ussdgw_store_cluster_replies", "What a Redis Cluster answered the auto-pipeline instead of a reply, "
            "by kind: MOVED (slot map corrected), ASK (slot migrating), TRYAGAIN (keys mid-migration), "
            "CLUSTERDOWN (failover), NOSCRIPT (script loaded again), batch_failed (a node unreachable)", "kind")
        # ---- USSD
        self.ussd_dialogues = self._counter(
            "ussdgw_ussd_dialogues", "USSD dialogue events, by event: started (a dial reached a service), closed "
            "(the last screen was sent), aborted (released by the phone or network), timed_out (an answer came "
            "after the deadline)", "event")
        self.ussd_open = self._scrape_gauge(
            "ussdgw_ussd_dialogues_open", "USSD dialogues waiting for the subscriber's answer whose last step this "
            "gateway process handled, until their step deadline")
        # ---- self-care API
        self.api_requests = self._counter(
            "ussdgw_api_requests", "Self-care API requests, by method, route template and HTTP status", "method",
            "route", "status")
        self.api_seconds = self._histogram(
            "ussdgw_api_request_duration_seconds", "Self-care API request handling time, by method and route "
            "template", ("method", "route"), LATENCY_BUCKETS)
        self.signin_refusals = self._counter(
            "ussdgw_api_signin_refusals", "Sign-ins refused, by reason (wrong_password, locked, rate_limited, busy, "
            "not_trusted_network, bad_request, ...)", "reason")
        self.store_unavailable.start_at_zero("mo", "receipt", "mt", "api")
        self.store_redirections.start_at_zero("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "NOSCRIPT", "batch_failed")
        self.submit_sm_errors.start_at_zero("timeout", "link_down")
        self.bind_events.start_at_zero("bound", "refused", "link_down")
        self.ussd_dialogues.start_at_zero("started", "closed", "aborted", "timed_out")
        self._register_scrape_gauges()

    def store_redirected(self, kind: str) -> None:
        """The auto-pipeline's hook: a node answered `kind` instead of a reply (or its batch failed)."""
        self.store_redirections.inc(kind)

    def store_batch(self, size: int, seconds: float) -> None:
        """The auto-pipeline's hook: one batch of `size` commands took `seconds`."""
        self.store_batch_size.observe(size)
        self.store_batch_seconds.observe(seconds)


class SimulatorMetrics(_Metrics):
    """What the SMSC simulator counts."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.mo_delivered = self._counter(
            "ussdgw_sim_mo_delivered", "MOs (sms, ussd) and delivery receipts (receipt) acknowledged by an ESME "
            "with ESME_ROK", "kind")
        self.mo_retried = self._counter(
            "ussdgw_sim_mo_retried", "deliver_sm attempts that will be made again, by kind and reason: the "
            "ESME's command_status, timeout, link_down", "kind", "reason")
        self.mo_rejected = self._counter(
            "ussdgw_sim_mo_rejected", "deliver_sm given up because the ESME answered a permanent error", "kind")
        self.mt = self._counter(
            "ussdgw_sim_mt", "MTs (each submit_sm part) by fate: DELIVERED, UNDELIVERABLE, EXPIRED, ...", "fate")
        self.submit_sm = self._counter(
            "ussdgw_sim_submit_sm", "submit_sm and data_sm answered, by the command_status sent (refusals come "
            "from the flow control being switched on)", "status")
        self.bind_requests = self._counter(
            "ussdgw_sim_bind_requests", "Bind requests answered, by command_status", "status")
        self.binds = self._scrape_gauge(
            "ussdgw_sim_binds", "ESME sessions bound now (a bound session may deliver or submit)")
        self.mo_pending = self._scrape_gauge(
            "ussdgw_sim_mo_pending", "MOs and receipts queued for ESMEs and not acknowledged yet")
        self.mo_delivered.start_at_zero("sms", "ussd", "receipt")
        self.mo_rejected.start_at_zero("sms", "ussd", "receipt")
        self._register_scrape_gauges()

    def fate(self, state: str) -> None:
        self.mt.inc(message_state_label(state))


def message_state_label(state: str) -> str:
    """A message_state name for a label ("other" outside SMPP 3.4's table)."""
    return state if state in _MESSAGE_STATES else OTHER
