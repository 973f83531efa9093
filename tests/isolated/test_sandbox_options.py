"""A sandbox set without editing the class: by the ``[minions.sandbox]`` table of the config
(``minions.toml``) or by ``run(...)`` options, merged into the class's own isolation; and the
definition errors that keep a sandbox from being missed."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest

from isolation._sandbox.kernel import probe_kernel
from minions import ComponentOptionsError, Runtime

from ._hostile import Plain, Vendor

pytestmark = pytest.mark.anyio

LIMIT = 60.0


@pytest.mark.skipif(probe_kernel().landlock_abi < 6, reason="this kernel cannot enforce a sandbox")
async def test_the_operator_sandboxes_classes_from_the_config_and_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Plain`` is sandboxed by the config table (and so isolated); ``Vendor`` by run options,
    keeping its own Isolation(memory_mb=512) and seeing only the variable allowed."""
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("VENDOR_API_KEY", "secret")
    config = {"minions": {"sandbox": {"Plain": True}}}
    options = {Vendor: {"sandbox": {"env": ["TZ"]}}}
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, config=config, options=options) as runtime:
            await runtime.start(Plain, Vendor)
            plain, vendor = runtime.instances()["Plain"], runtime.instances()["Vendor"]
            assert runtime.status()["Plain"].isolated
            assert (await plain.attempt("read a file", "/etc/passwd")).startswith("refused")
            assert await vendor.attempt("environment") == "done: {'TZ': 'UTC'}"
            assert (await vendor.attempt("fork")).startswith("refused")


async def test_a_misspelt_name_in_the_sandbox_table_is_an_error(tmp_path: Path) -> None:
    config = {"minions": {"sandbox": {"Vendr": True}}}
    runtime = Runtime(project_dir=tmp_path, config=config)
    with pytest.raises(ComponentOptionsError, match=r"names Vendr, which is not among"):
        await runtime.start(Vendor)
    await runtime.stop()


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"isolated": False, "sandbox": True}, "has a sandbox but isolated=False"),
        ({"sandbox": {"networks": []}}, r"unknown sandbox setting\(s\) networks"),
        ({"sandbox": "yes"}, "a sandbox is true, false, a Sandbox"),
    ],
)
async def test_bad_sandbox_options_are_definition_errors(
    tmp_path: Path, options: dict[str, object], complaint: str
) -> None:
    runtime = Runtime(project_dir=tmp_path, options={Plain: options})
    with pytest.raises(ComponentOptionsError, match=complaint):
        await runtime.start(Plain)
    await runtime.stop()


@pytest.mark.skipif(probe_kernel().landlock_abi < 6, reason="this kernel cannot enforce a sandbox")
async def test_a_sandbox_reaches_the_endpoints_it_lists_and_nothing_else(tmp_path: Path) -> None:
    """Sandbox(network=["localhost:P"]): TCP to P connects (by name too: the parent resolved
    it); another port, UDP, listening and any other name are refused."""
    allowed = socket.create_server(("127.0.0.1", 0))
    other = socket.create_server(("127.0.0.1", 0))
    port, other_port = allowed.getsockname()[1], other.getsockname()[1]
    options = {Plain: {"sandbox": {"network": [f"localhost:{port}"]}}}
    try:
        with anyio.fail_after(LIMIT):
            async with Runtime(project_dir=tmp_path, options=options) as runtime:
                await runtime.start(Plain)
                plain = runtime.instances()["Plain"]
                outcomes = {
                    "allowed": await plain.attempt("open a tcp connection", port),
                    "by name": await plain.attempt("connect to a host", ["localhost", port]),
                    "other port": await plain.attempt("open a tcp connection", other_port),
                    "udp": await plain.attempt("send a udp datagram", port),
                    "listen": await plain.attempt("listen on a tcp port"),
                    "other name": await plain.attempt("connect to a host", ["example.com", 80]),
                }
    finally:
        allowed.close()
        other.close()
    assert outcomes["allowed"] == outcomes["by name"] == "done: None"
    assert "errno 13:" in outcomes["other port"]  # EACCES: Landlock, by port
    assert "errno 97:" in outcomes["udp"]  # EAFNOSUPPORT: seccomp, TCP only
    assert outcomes["listen"].startswith("refused: PermissionError")
    assert "not among the hosts this sandbox may reach (localhost)" in outcomes["other name"]
