"""TF-Serving-named Prometheus metrics of the model server, rendered in the text format TF Serving's exporter uses.

Names keep TF Serving's leading colon (`:tensorflow:serving:request_count`), which prometheus_client's metric
classes would rewrite (they append `_total`), so the few families here are kept and rendered by hand.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence

LabelValues = tuple[str, ...]

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
INPUT_BATCH_SIZE = ":tensorflow:serving:batching_session:input_batch_size"
QUEUING_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"

# TF Serving's request latency buckets: exponential 10 × 1.8^i µs, 33 buckets.
LATENCY_BUCKETS_US: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))
BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(14))


class Counter:
    def __init__(self, name: str, help_text: str, label_names: Sequence[str]) -> None:
        self.name, self.help_text, self.label_names = name, help_text, tuple(label_names)
        self._values: dict[LabelValues, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[tuple(label_values)] += amount

    def value(self, *label_values: str) -> float:
        with self._lock:
            return self._values.get(tuple(label_values), 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} counter"
        with self._lock:
            items = sorted(self._values.items())
        for labels, value in items:
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(value)}"


class Histogram:
    def __init__(self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]) -> None:
        self.name, self.help_text, self.label_names = name, help_text, tuple(label_names)
        self.buckets = tuple(buckets)
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = defaultdict(float)
        self._lock = threading.Lock()

    def observe(self, value: float, *label_values: str) -> None:
        key = tuple(label_values)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sums[key] += value

    def observations(self, *label_values: str) -> int:
        with self._lock:
            return sum(self._counts.get(tuple(label_values), []))

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} histogram"
        with self._lock:
            items = sorted((key, list(counts), self._sums[key]) for key, counts in self._counts.items())
        for labels, counts, total in items:
            cumulative = 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                yield f"{self.name}_bucket{_labels((*self.label_names, 'le'), (*labels, le))} {cumulative}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total)}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {cumulative}"


class ServerMetrics:
    """Every metric family the embedded server exports."""

    def __init__(self) -> None:
        self.request_count = Counter(REQUEST_COUNT, "The total number of requests.", ("model_name", "status"))
        self.request_latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            LATENCY_BUCKETS_US,
        )
        self.processed_batch_size = Histogram(
            BATCH_SIZE, "Tracks the batch size distribution on processing.", ("model_name",), BATCH_SIZE_BUCKETS
        )
        self.input_batch_size = Histogram(
            INPUT_BATCH_SIZE, "Tracks the batch size distribution on the inputs.", ("model_name",), BATCH_SIZE_BUCKETS
        )
        self.queuing_latency = Histogram(
            QUEUING_LATENCY,
            "Distribution of wall time spent (in microseconds) in queuing.",
            ("thread_pool_name",),
            LATENCY_BUCKETS_US,
        )
        self.load_latency = Histogram(
            LOAD_LATENCY,
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ("model_path",),
            LATENCY_BUCKETS_US,
        )

    def families(self) -> tuple[Counter | Histogram, ...]:
        return (
            self.request_count,
            self.request_latency,
            self.processed_batch_size,
            self.input_batch_size,
            self.queuing_latency,
            self.load_latency,
        )

    def render(self) -> str:
        return "".join(f"{line}\n" for family in self.families() for line in family.render())


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))
