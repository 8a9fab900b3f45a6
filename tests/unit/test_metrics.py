"""The Prometheus registry: values, labels, histogram buckets, exposition text."""

from __future__ import annotations

import math
import re

import pytest

from gateway.metrics import Counter, Gauge, Histogram, Registry

SAMPLE_RE = re.compile(
    r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*",?)*\})? '
    r"(NaN|[+-]Inf|-?[0-9.e+-]+)"
)


def test_counter_unlabelled_and_render() -> None:
    reg = Registry()
    c = reg.counter("ccgw_calls_total", "Calls handled.")
    c.inc()
    c.inc(2.5)
    assert c.value == 3.5
    assert reg.render() == (
        "# HELP ccgw_calls_total Calls handled.\n"
        "# TYPE ccgw_calls_total counter\n"
        "ccgw_calls_total 3.5\n"
    )


def test_counter_rejects_decrease() -> None:
    c = Registry().counter("x_total", "x")
    with pytest.raises(ValueError):
        c.inc(-1)


def test_bound_child_is_same_object_and_cheap() -> None:
    c = Registry().counter("ccgw_sip_drops_total", "d", ["cause"])
    bad = c.labels(cause="bad_request")
    assert c.labels("bad_request") is bad
    for _ in range(1000):
        bad.inc()
    assert bad.value == 1000
    assert c.labels(cause="flood").value == 0


def test_label_errors() -> None:
    c = Registry().counter("c_total", "c", ["a", "b"])
    with pytest.raises(ValueError):
        c.labels("1")
    with pytest.raises(ValueError):
        c.labels(a="1")
    with pytest.raises(ValueError):
        c.labels(a="1", b="2", z="3")
    with pytest.raises(TypeError):
        c.labels("1", b="2")
    with pytest.raises(ValueError):
        c.inc()  # labelled: must bind a child first
    plain = Registry().counter("p_total", "p")
    with pytest.raises(ValueError):
        plain.labels("x")


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b"])
def test_bad_metric_names(name: str) -> None:
    with pytest.raises(ValueError):
        Counter(name, "x")


@pytest.mark.parametrize("label", ["__reserved", "a-b", "1a"])
def test_bad_label_names(label: str) -> None:
    with pytest.raises(ValueError):
        Counter("ok_total", "x", [label])


def test_duplicate_registration_refused_but_registries_independent() -> None:
    a, b = Registry(), Registry()
    a.counter("ccgw_x_total", "x").inc()
    with pytest.raises(ValueError):
        a.gauge("ccgw_x_total", "again")
    b.counter("ccgw_x_total", "x")  # another site's registry: fine
    assert "ccgw_x_total 1" in a.render()
    assert "ccgw_x_total 0" in b.render()


def test_label_value_and_help_escaping() -> None:
    reg = Registry()
    reg.counter("e_total", 'help with \\ and\nnewline "quotes"', ["v"]).labels(v='a"b\\c\nd').inc()
    text = reg.render()
    assert '# HELP e_total help with \\\\ and\\nnewline "quotes"\n' in text
    assert 'e_total{v="a\\"b\\\\c\\nd"} 1\n' in text
    for line in text.splitlines():
        assert line.startswith("#") or SAMPLE_RE.fullmatch(line), line


def test_gauge_set_inc_dec_and_function() -> None:
    reg = Registry()
    g = reg.gauge("ccgw_calls_active", "Active calls.")
    g.set(5)
    g.inc()
    g.dec(2)
    assert g.value == 4
    box = [7.0]
    g.set_function(lambda: box[0])
    assert "ccgw_calls_active 7\n" in reg.render()
    box[0] = 8.25
    assert "ccgw_calls_active 8.25\n" in reg.render()


def test_gauge_callback_labelled_mapping() -> None:
    reg = Registry()
    waiting: dict[tuple[str, ...], float] = {("sales",): 3.0, ("service",): 0.0}
    reg.gauge("ccgw_queue_waiting", "Waiting calls.", ["queue"], callback=lambda: waiting)
    text = reg.render()
    assert 'ccgw_queue_waiting{queue="sales"} 3\n' in text
    assert 'ccgw_queue_waiting{queue="service"} 0\n' in text


def test_gauge_callback_unlabelled() -> None:
    reg = Registry()
    reg.gauge("ccgw_outbox_depth", "Outbox rows.", callback=lambda: 12)
    assert "ccgw_outbox_depth 12\n" in reg.render()


def test_failing_callback_does_not_break_page() -> None:
    reg = Registry()

    def broken() -> float:
        raise RuntimeError("gone")

    reg.gauge("a_broken", "b", callback=broken)
    reg.counter("b_total", "c").inc()
    text = reg.render()
    assert "# TYPE a_broken gauge\n" in text
    assert not any(line.startswith("a_broken") for line in text.splitlines())
    assert "b_total 1\n" in text


def test_histogram_buckets_cumulative_le_inclusive() -> None:
    reg = Registry()
    h = reg.histogram("ccgw_setup_seconds", "Setup time.", buckets=[0.1, 0.5, 1])
    for v in (0.05, 0.1, 0.3, 0.5, 2.0):
        h.observe(v)
    text = reg.render()
    assert 'ccgw_setup_seconds_bucket{le="0.1"} 2\n' in text  # 0.05 and 0.1 (le is <=)
    assert 'ccgw_setup_seconds_bucket{le="0.5"} 4\n' in text
    assert 'ccgw_setup_seconds_bucket{le="1"} 4\n' in text
    assert 'ccgw_setup_seconds_bucket{le="+Inf"} 5\n' in text
    assert "ccgw_setup_seconds_count 5\n" in text
    assert "ccgw_setup_seconds_sum 2.95\n" in text
    assert "# TYPE ccgw_setup_seconds histogram\n" in text


def test_histogram_labelled() -> None:
    h = Histogram("h", "h", ["trunk"], buckets=[1.0])
    h.labels(trunk="ct").observe(0.5)
    reg = Registry()
    reg._metrics["h"] = h  # direct construction also works
    text = reg.render()
    assert 'h_bucket{trunk="ct",le="1"} 1\n' in text
    assert 'h_sum{trunk="ct"} 0.5\n' in text


@pytest.mark.parametrize("buckets", [[], [2.0, 1.0], [1.0, 1.0]])
def test_histogram_bad_buckets(buckets: list[float]) -> None:
    with pytest.raises(ValueError):
        Histogram("h", "h", buckets=buckets)


def test_histogram_le_label_reserved() -> None:
    with pytest.raises(ValueError):
        Histogram("h", "h", ["le"])


def test_special_values() -> None:
    reg = Registry()
    reg.gauge("g_nan", "n").set(math.nan)
    reg.gauge("g_inf", "i").set(math.inf)
    reg.gauge("g_ninf", "i").set(-math.inf)
    reg.gauge("g_big", "i").set(1e20)
    text = reg.render()
    assert "g_nan NaN\n" in text
    assert "g_inf +Inf\n" in text
    assert "g_ninf -Inf\n" in text
    assert "g_big 1e+20\n" in text


def test_remove_series() -> None:
    reg = Registry()
    g = reg.gauge("q", "q", ["queue"])
    g.labels("a").set(1)
    g.remove("a")
    assert "q{" not in reg.render()


def test_empty_registry_renders_empty() -> None:
    assert Registry().render() == ""
    assert isinstance(Registry().gauge("x", "x"), Gauge)


def test_counter_callback_reads_existing_counts() -> None:
    class Core:
        offered = 0
        drops: dict[tuple[str, ...], float] = {("bad_request",): 2.0}  # noqa: RUF012

    core = Core()
    reg = Registry()
    offered = reg.counter(
        "ccgw_calls_offered_total", "Calls offered.", callback=lambda: core.offered
    )
    reg.counter("ccgw_drops_total", "Drops.", ["cause"], callback=lambda: core.drops)
    core.offered = 7
    text = reg.render()
    assert "# TYPE ccgw_calls_offered_total counter\nccgw_calls_offered_total 7\n" in text
    assert 'ccgw_drops_total{cause="bad_request"} 2\n' in text
    assert offered.value == 7
