"""A small Prometheus registry: counters, gauges and histograms with labels, no dependencies.

One :class:`Registry` per site gateway (tests run several in one process); there is deliberately
no module-level default registry. The hot path is a bound child: ``c = counter.labels(cause=
"bad_request")`` once, then ``c.inc()`` is an attribute add. Children are not locked: increment
them from the event loop thread (CPython makes a lost update from another thread merely unlikely).

``Registry.render()`` produces the text exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

import bisect
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Final, Generic, TypeVar

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
]

logger = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The HTTP Content-Type of :meth:`Registry.render` output."""

DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram bucket upper bounds (seconds) when none are given."""

_METRIC_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

LabelValues = tuple[str, ...]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class CounterChild:
    """One labelled series of a :class:`Counter`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (must not be negative: counters only go up)."""
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        self.value += amount


class GaugeChild:
    """One labelled series of a :class:`Gauge`: set, inc/dec, or read from a callback."""

    __slots__ = ("_function", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        """Set the current value."""
        self.value = value

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        self.value -= amount

    def set_function(self, function: Callable[[], float] | None) -> None:
        """Read the value from ``function`` at render time instead (``None`` to stop)."""
        self._function = function

    def get(self) -> float:
        """The current value (the callback's, if one is set)."""
        return self._function() if self._function is not None else self.value


class HistogramChild:
    """One labelled series of a :class:`Histogram`."""

    __slots__ = ("_bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        # A bucket counts values <= its bound ("le"), so the first bound >= value.
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[int]:
        """Cumulative counts per bucket, ending with +Inf (== ``count``)."""
        out, total = [], 0
        for n in self.counts:
            total += n
            out.append(total)
        return out


_C = TypeVar("_C", CounterChild, GaugeChild, HistogramChild)


class _Metric(Generic[_C]):
    kind: str = ""

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> None:
        if not _METRIC_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        self.name = name
        self.documentation = documentation
        self.labelnames: tuple[str, ...] = tuple(labelnames)
        for label in self.labelnames:
            if not _LABEL_NAME_RE.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for {name}")
        if len(set(self.labelnames)) != len(self.labelnames):
            raise ValueError(f"repeated label name in {name}")
        self._children: dict[LabelValues, _C] = {}
        self._unlabelled: _C | None = None
        if not self.labelnames:
            self._unlabelled = self._children[()] = self._new_child()

    def _new_child(self) -> _C:
        raise NotImplementedError

    def labels(self, *values: str, **kwargs: str) -> _C:
        """The child for these label values (positional in ``labelnames`` order, or by name);
        bind it once and keep it: that makes each increment a plain attribute add."""
        if kwargs:
            if values:
                raise TypeError("pass label values either by position or by name")
            try:
                values = tuple(kwargs[n] for n in self.labelnames)
            except KeyError as exc:
                raise ValueError(f"{self.name}: missing label {exc.args[0]!r}") from None
            if len(kwargs) != len(self.labelnames):
                extra = set(kwargs) - set(self.labelnames)
                raise ValueError(f"{self.name}: unknown labels {sorted(extra)}")
        elif len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        if not self.labelnames:
            raise ValueError(f"{self.name} has no labels")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def remove(self, *values: str) -> None:
        """Forget one labelled series (e.g. a queue that was deleted)."""
        self._children.pop(tuple(values), None)

    def _only(self) -> _C:
        if self._unlabelled is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: call .labels() first")
        return self._unlabelled

    def samples(self) -> Iterator[tuple[str, str, float]]:
        """``(suffixed name, label text, value)`` for rendering."""
        raise NotImplementedError


class Counter(_Metric[CounterChild]):
    """A monotonically increasing count (name it ``..._total``). ``callback`` (if given) reads an
    existing counter at render time instead, e.g. a plain ``int`` attribute a pure core keeps: a
    number when unlabelled, a mapping of label-value tuples to numbers when labelled."""

    kind = "counter"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        callback: Callable[[], float] | Callable[[], Mapping[LabelValues, float]] | None = None,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._callback = callback

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        """Increment the unlabelled counter."""
        self._only().inc(amount)

    @property
    def value(self) -> float:
        """The unlabelled counter's value (the callback's, if one is set)."""
        if self._callback is not None and not self.labelnames:
            return float(self._callback())  # type: ignore[arg-type]
        return self._only().value

    def samples(self) -> Iterator[tuple[str, str, float]]:
        if self._callback is not None:
            yield from _callback_samples(self.name, self.labelnames, self._callback)
            return
        for values, child in list(self._children.items()):
            yield self.name, _label_text(self.labelnames, values), child.value


def _callback_samples(
    name: str,
    labelnames: tuple[str, ...],
    callback: Callable[[], float] | Callable[[], Mapping[LabelValues, float]],
) -> Iterator[tuple[str, str, float]]:
    result = callback()
    if isinstance(result, Mapping):
        for values, value in result.items():
            yield name, _label_text(labelnames, values), float(value)
    else:
        yield name, "", float(result)


class Gauge(_Metric[GaugeChild]):
    """A value that goes up and down. ``callback`` (if given) is read at render time: for an
    unlabelled gauge it returns a number; for a labelled one, a mapping of label-value tuples to
    numbers (e.g. waiting calls per queue), which replaces the set children."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        callback: Callable[[], float] | Callable[[], Mapping[LabelValues, float]] | None = None,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._callback = callback

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        """Set the unlabelled gauge."""
        self._only().set(value)

    def inc(self, amount: float = 1.0) -> None:
        """Add to the unlabelled gauge."""
        self._only().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract from the unlabelled gauge."""
        self._only().dec(amount)

    def set_function(self, function: Callable[[], float] | None) -> None:
        """Read the unlabelled gauge from ``function`` at render time."""
        self._only().set_function(function)

    @property
    def value(self) -> float:
        """The unlabelled gauge's current value."""
        return self._only().get()

    def samples(self) -> Iterator[tuple[str, str, float]]:
        if self._callback is None:
            for values, child in list(self._children.items()):
                yield self.name, _label_text(self.labelnames, values), child.get()
            return
        yield from _callback_samples(self.name, self.labelnames, self._callback)


class Histogram(_Metric[HistogramChild]):
    """Observations counted in fixed buckets (``le`` = less than or equal), with sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be strictly increasing and not empty")
        self.bounds = bounds
        if "le" in tuple(labelnames):
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        super().__init__(name, documentation, labelnames)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        """Record one observation in the unlabelled histogram."""
        self._only().observe(value)

    def samples(self) -> Iterator[tuple[str, str, float]]:
        les = [_format_value(b) for b in self.bounds] + ["+Inf"]
        names = (*self.labelnames, "le")
        for values, child in list(self._children.items()):
            for le, count in zip(les, child.cumulative(), strict=True):
                yield f"{self.name}_bucket", _label_text(names, (*values, le)), count
            labels = _label_text(self.labelnames, values)
            yield f"{self.name}_sum", labels, child.sum
            yield f"{self.name}_count", labels, child.count


_M = TypeVar("_M", Counter, Gauge, Histogram)


class Registry:
    """A set of metrics rendered together; create one per site gateway."""

    def __init__(self) -> None:
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}

    def _add(self, metric: _M) -> _M:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} is already registered")
        self._metrics[metric.name] = metric
        return metric

    def counter(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        callback: Callable[[], float] | Callable[[], Mapping[LabelValues, float]] | None = None,
    ) -> Counter:
        """Create and register a :class:`Counter`."""
        return self._add(Counter(name, documentation, labelnames, callback))

    def gauge(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        callback: Callable[[], float] | Callable[[], Mapping[LabelValues, float]] | None = None,
    ) -> Gauge:
        """Create and register a :class:`Gauge`."""
        return self._add(Gauge(name, documentation, labelnames, callback))

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """Create and register a :class:`Histogram`."""
        return self._add(Histogram(name, documentation, labelnames, buckets))

    def get(self, name: str) -> Counter | Gauge | Histogram | None:
        """The registered metric called ``name``, or ``None``."""
        return self._metrics.get(name)

    def render(self) -> str:
        """All metrics in the Prometheus text format 0.0.4. A callback that raises is logged and
        its metric rendered with no samples; the rest of the page is unaffected."""
        lines: list[str] = []
        for metric in list(self._metrics.values()):
            try:
                samples = list(metric.samples())
            except Exception:
                logger.exception("metric %s: callback failed", metric.name)
                samples = []
            lines.append(f"# HELP {metric.name} {_escape_help(metric.documentation)}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            lines.extend(f"{n}{labels} {_format_value(v)}" for n, labels, v in samples)
        return "\n".join(lines) + "\n" if lines else ""
