"""Fixtures for integration tests with real peers (SIPp, baresip, a Python RTP endpoint).

Every process a fixture starts is ended by its PID at teardown, pass or fail; when a test fails
the output of every process it started is printed in the report (section "peers").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from . import peers
except ImportError:
    import peers  # type: ignore[no-redef]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    rep = outcome.get_result()
    reg = item.stash.get(_REGISTRY, None)
    if reg is not None and rep.failed and rep.when in ("call", "setup"):
        rep.sections.append(("peers", reg.describe()))


_REGISTRY = pytest.StashKey["peers.ProcessRegistry"]()


@pytest.fixture
def tmp_workdir(tmp_path: Path) -> Path:
    """A per-test directory for peer configs, logs and recordings."""
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def peer_registry(request: pytest.FixtureRequest) -> Iterator[peers.ProcessRegistry]:
    """Tracks every process the test starts; ends them all by PID at teardown."""
    reg = peers.ProcessRegistry()
    request.node.stash[_REGISTRY] = reg
    try:
        yield reg
    finally:
        reg.cleanup()


@pytest.fixture
def sipp_factory(
    tmp_workdir: Path, peer_registry: peers.ProcessRegistry
) -> Callable[..., peers.Sipp]:
    """``sipp_factory(scenario, remote=None, **kwargs) -> Sipp`` (not started)."""
    if peers.SIPP_BIN is None:
        pytest.skip("sipp binary not found (apt-get install sip-tester)")

    def make(scenario: str, remote: str | None = None, **kwargs: Any) -> peers.Sipp:
        kwargs.setdefault("workdir", tmp_workdir)
        kwargs.setdefault("registry", peer_registry)
        return peers.Sipp(scenario, remote, **kwargs)

    return make


@pytest.fixture
def baresip_factory(
    tmp_workdir: Path, peer_registry: peers.ProcessRegistry
) -> Callable[..., peers.Baresip]:
    """``baresip_factory(ext="1001", **kwargs) -> Baresip`` (not started)."""
    if peers.BARESIP_BIN is None:
        pytest.skip("baresip binary not found (apt-get install baresip)")

    def make(ext: str = "1001", **kwargs: Any) -> peers.Baresip:
        kwargs.setdefault("workdir", tmp_workdir)
        kwargs.setdefault("registry", peer_registry)
        return peers.Baresip(ext=ext, **kwargs)

    return make


@pytest.fixture
def rtp_peer_factory(peer_registry: peers.ProcessRegistry) -> Callable[..., peers.RtpPeer]:
    """``rtp_peer_factory(echo=False) -> RtpPeer`` bound on 127.0.0.1, closed at teardown."""

    def make(**kwargs: Any) -> peers.RtpPeer:
        kwargs.setdefault("registry", peer_registry)
        return peers.RtpPeer(**kwargs)

    return make
