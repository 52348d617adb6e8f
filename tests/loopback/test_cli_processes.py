"""Every command the README shows, run as a real process on free loopback ports.

Each long-running command (`up`, `gateway`, `smsc`) is started, awaited until it prints that it is
up, driven by the short commands (`sms`, `dial`, `seed`) where that makes sense, then stopped by
SIGINT: it must exit 0 within seconds and leave no process behind (the embedded redis-server
above all). A second SIGINT during a stop held up by a request in flight ends the process at once.
Every process started here is killed at the end of its test, whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.processes import (
    STARTUP_S,
    STOP_S,
    Command,
    Proc,
    assert_stops_cleanly,
    http_port,
    left_over,
    marked,
    proc_stat,
    run,
    wait_process,
)
from ussdgw.redis_server import EmbeddedRedis

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "demo" / "subscribers.yaml"

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")


# ---- up, and the commands a tester types next to it ------------------------------------------
@pytest.fixture
def up(ussdgw: Callable[..., Command]) -> Command:
    command = ussdgw("up")
    endpoints = command.endpoints()
    assert endpoints["gateway"].startswith("bound to "), command.output
    assert [p for p in marked(command.mark) if "redis-server" in p.cmdline], "no embedded redis-server"
    return command


def test_up_serves_seed_sms_and_dial_then_stops_cleanly_on_sigint(up: Command,
                                                                  ussdgw: Callable[..., Command]) -> None:
    port = str(http_port(up.endpoints()["simulator"]))
    # seed without REDIS_URL: the running platform's Redis, found in the state folder they share
    seeded = run(ussdgw, "seed", str(DEMO))
    assert seeded.popen.returncode == 0, seeded.output
    assert seeded.out == [f"seeded 4 subscribers from {DEMO}"]
    assert len([p for p in marked(up.mark) if "redis-server" in p.cmdline]) == 1
    # sms and dial find the simulator from USSDGW_SIM_HTTP_PORT, as `up` was told
    sms = run(ussdgw, "sms", "--from", "79161234567", "--to", "3339", "ПАРОЛЬ", USSDGW_SIM_HTTP_PORT=port)
    assert sms.popen.returncode == 0, sms.output
    assert sms.out[0] == "→ 3339: ПАРОЛЬ"
    assert re.fullmatch(r"← 3339: Пароль для входа в Личный кабинет: [a-z0-9]{8,10}", sms.out[1]), sms.output
    dial = run(ussdgw, "dial", "--from", "79161234567", "*100#", USSDGW_SIM_HTTP_PORT=port)
    assert dial.popen.returncode == 0, dial.output
    assert "Ваш баланс: 250\u00a0₽." in dial.output, dial.output  # the seeded balance
    menu = run(ussdgw, "dial", "--from", "79161234567", "*111#", "--answers", "1", USSDGW_SIM_HTTP_PORT=port)
    assert menu.popen.returncode == 0, menu.output
    assert "→ 1" in menu.output and "сеанс завершён" in menu.output, menu.output
    assert_stops_cleanly(up)
    assert not left_over(up.mark)


def test_sms_and_dial_without_a_running_simulator_say_so(ussdgw: Callable[..., Command]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for args in (("sms", "--from", "79161234567", "--to", "3339", "ПАРОЛЬ"), ("dial", "--from", "79161234567",
                                                                              "*100#")):
        command = run(ussdgw, *args, USSDGW_SIM_HTTP_PORT=str(port))
        assert command.popen.returncode == 2, command.output
        assert f"cannot reach the simulator at http://127.0.0.1:{port}" in command.output.replace("\n", "")


def test_up_exits_0_on_one_sigint_and_stops_its_redis(up: Command) -> None:
    assert_stops_cleanly(up)
    up.wait_line(r'"event": ?"redis_stopped"', stderr=True, timeout=0)
    assert not left_over(up.mark)


def test_a_second_sigint_ends_a_slow_stop_at_once(up: Command) -> None:
    sim = up.endpoints()["simulator"]
    # A phone's long poll holds the simulator's HTTP server for its drain time when it stops.
    with socket.create_connection(("127.0.0.1", http_port(sim))) as poll:
        poll.sendall(b"GET /api/phones/79161234567/inbox?after=0&wait=30 HTTP/1.1\r\nHost: sim\r\n\r\n")
        with urllib.request.urlopen(f"{sim}/api/health", timeout=5) as health:  # the poll is in by now
            assert json.loads(health.read())["status"] == "ok"
        up.popen.send_signal(signal.SIGINT)
        up.wait_line(r"^SIGINT: stopping", stderr=True, timeout=STOP_S)
        second = time.monotonic()
        up.popen.send_signal(signal.SIGINT)
        code = up.finish()
        took = time.monotonic() - second
    assert code == -signal.SIGINT, f"exit {code}: the stop was not cut short\n{up.output}"
    assert took < 1.5, f"the second SIGINT took {took:.2f} s"
    assert not left_over(up.mark), "the redis-server outlived a forced exit"


def test_a_killed_up_takes_its_redis_server_with_it(up: Command) -> None:
    redis = [p for p in marked(up.mark) if "redis-server" in p.cmdline]
    up.popen.kill()  # no stop at all: the kernel's death signal (PR_SET_PDEATHSIG) stops Redis
    assert up.finish() == -signal.SIGKILL
    assert redis and not left_over(up.mark)


def test_two_signals_back_to_back_end_up_quickly_and_leave_nothing(up: Command) -> None:
    up.popen.send_signal(signal.SIGTERM)
    up.popen.send_signal(signal.SIGINT)
    code = up.finish()
    assert code in (0, -signal.SIGINT), up.output  # one orderly stop, or one cut short by the second
    assert not left_over(up.mark)


# ---- the parts alone -------------------------------------------------------------------------
def test_smsc_runs_without_redis_and_a_gateway_process_binds_to_it(ussdgw: Callable[..., Command],
                                                                  redis_url: str) -> None:
    smsc = ussdgw("smsc")
    endpoints = smsc.endpoints()
    assert "redis" not in endpoints and "gateway" not in endpoints, smsc.output
    assert [p.pid for p in marked(smsc.mark)] == [smsc.popen.pid], "the simulator alone started something"
    smpp = endpoints["smsc"].removeprefix("smpp://")
    gateway = ussdgw("gateway", "--smsc", smpp, "--system-id", "ussdgw", "--password", "ussdgw1",
                     "--api-port", "0", REDIS_URL=redis_url)
    assert gateway.endpoints()["gateway"] == f"bound to {smpp}", gateway.output
    api_port = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/api/v1", gateway.endpoints()["selfcare"])
    assert api_port and int(api_port.group(1)) > 0, gateway.output  # --api-port 0: the port it took, printed
    # and logged (before it was printed; stderr is read apart from stdout, so its line may come in a moment later)
    gateway.wait_line(rf'"part": ?"selfcare".*"port": ?{api_port.group(1)}\b', stderr=True, timeout=5)
    sms = run(ussdgw, "sms", "--from", "79161234567", "--to", "3339", "HELP", "--api", endpoints["simulator"])
    assert sms.popen.returncode == 0 and sms.out[1].startswith("← 3339: "), sms.output
    # the gateway process serves its metrics and readiness beside its API, the simulator its own metrics
    served = gateway.endpoints()["selfcare"].removesuffix("/api/v1")
    with urllib.request.urlopen(f"{served}/ready", timeout=5) as ready:
        assert json.loads(ready.read()) == {"ready": True, "checks": {"redis": "ok", "smpp": "1 of 1 binds bound"}}
    with urllib.request.urlopen(f"{served}/metrics", timeout=5) as metrics:
        assert 'ussdgw_mo_total{channel="sms",outcome="applied",route="send_help"} 1.0' in metrics.read().decode()
    with urllib.request.urlopen(f"{endpoints['simulator']}/metrics", timeout=5) as metrics:
        assert 'ussdgw_sim_mo_delivered_total{kind="sms"} 1.0' in metrics.read().decode()
    assert_stops_cleanly(gateway, smsc)
    smsc.wait_line(r'"event": ?"esme_unbound".*"by_esme": ?true|"by_esme": ?true.*"event": ?"esme_unbound"',
                   stderr=True, timeout=1)
    assert_stops_cleanly(smsc)
    assert not left_over(smsc.mark)


def test_a_gateway_still_connecting_stops_on_sigterm(ussdgw: Callable[..., Command], redis_url: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = ussdgw("gateway", "--smsc", f"127.0.0.1:{port}", REDIS_URL=redis_url)
    gateway.wait_line(r'"event": ?"link_down"', stderr=True)  # retrying, not up yet
    gateway.popen.send_signal(signal.SIGTERM)
    assert gateway.finish() == 0, gateway.output
    gateway.wait_line(r"^SIGTERM: stopping the gateway", stderr=True, timeout=0)
    assert not left_over(gateway.mark)


def test_a_taken_port_is_a_clear_error_not_a_traceback(ussdgw: Callable[..., Command]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        smsc = run(ussdgw, "smsc", "--http-port", str(sock.getsockname()[1]))
    assert smsc.popen.returncode == 1, smsc.output
    assert "ussdgw smsc cannot start:" in smsc.output and "Traceback" not in smsc.output
    assert not left_over(smsc.mark)


def cluster_ports(folder: Path) -> set[int]:
    """Every node's port, as the nodes' own cluster files list them ("ip:port@bus ...")."""
    return {int(m.group(1)) for conf in folder.glob("node-*/nodes.conf")
            for m in re.finditer(r"127\.0\.0\.1:(\d+)@", conf.read_text())}


def redis_nodes(ports: set[int]) -> list[Proc]:
    """The live redis-servers listening on `ports` (a cluster node's title is its address, which
    carries no mark: found by port)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        stat = proc_stat(int(entry.name))
        if "redis-server" in cmdline and stat and any(f":{port}" in cmdline for port in ports):
            found.append(Proc(int(entry.name), stat[1], cmdline))
    return [p for p in found if p.alive()]


def test_up_with_a_redis_cluster_serves_seed_and_sms_and_stops_every_node(ussdgw: Callable[..., Command],
                                                                           tmp_path: Path) -> None:
    up = ussdgw("up", "--redis-cluster")
    endpoints = up.endpoints()
    assert endpoints["redis"].startswith("redis+cluster://127.0.0.1:"), up.output
    folder = tmp_path / "state" / "redis-cluster"
    ports = cluster_ports(folder)
    assert len(ports) == 6 and all(port + 10000 < 32768 for port in ports), ports  # bus ports below ephemeral
    assert len(redis_nodes(ports)) == 6
    assert all((path.stat().st_mode & 0o077) == 0 for path in [folder, *folder.glob("node-*")])  # private
    # seed finds the running cluster through the state folder and starts no Redis of its own
    seeded = run(ussdgw, "seed", str(DEMO))
    assert seeded.popen.returncode == 0, seeded.output
    assert "redis_started" not in seeded.output and len(redis_nodes(ports)) == 6
    port = str(http_port(endpoints["simulator"]))
    sms = run(ussdgw, "sms", "--from", "79161234567", "--to", "3339", "ПАРОЛЬ", USSDGW_SIM_HTTP_PORT=port)
    assert re.fullmatch(r"← 3339: Пароль для входа в Личный кабинет: [a-z0-9]{8,10}", sms.out[1]), sms.output
    served = endpoints["selfcare"].removesuffix("/api/v1")
    with urllib.request.urlopen(f"{served}/ready", timeout=5) as ready:
        checks = json.loads(ready.read())["checks"]
    assert checks["redis"] == "ok" and checks["redis_primaries"] == "3 of 3 answer", checks
    assert_stops_cleanly(up)
    deadline = time.monotonic() + 5
    while redis_nodes(ports) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not redis_nodes(ports), "cluster nodes left running"
    assert not left_over(up.mark)


def test_a_gateway_whose_key_cannot_read_the_queue_refuses_to_start(ussdgw: Callable[..., Command],
                                                                     redis_url: str) -> None:
    key = secrets.token_hex(32)
    first = ussdgw("gateway", "--smsc", "127.0.0.1:9", REDIS_URL=redis_url, USSDGW_SECRET_KEY=key)
    first.wait_line(r'"event": ?"link_down"', stderr=True)  # started: the check is sealed with its key
    # a seed seals nothing: any key will do
    assert run(ussdgw, "seed", str(DEMO), REDIS_URL=redis_url).popen.returncode == 0
    other = run(ussdgw, "gateway", "--smsc", "127.0.0.1:9", REDIS_URL=redis_url,
                USSDGW_SECRET_KEY=secrets.token_hex(32))
    assert other.popen.returncode == 1, other.output
    assert "ussdgw gateway cannot start: the secret key" in other.output, other.output
    assert "same key" in other.output and "Traceback" not in other.output
    again = ussdgw("gateway", "--smsc", "127.0.0.1:9", REDIS_URL=redis_url, USSDGW_SECRET_KEY=key)
    again.wait_line(r'"event": ?"link_down"', stderr=True)  # the same key: it starts
    for command in (first, again):
        command.popen.send_signal(signal.SIGTERM)
        assert command.finish() == 0, command.output
    assert not left_over(other.mark)


# ---- the one-shot commands ---------------------------------------------------------------------
def test_seed_loads_the_demo_subscribers_into_a_given_redis(ussdgw: Callable[..., Command], redis_url: str) -> None:
    seeded = run(ussdgw, "seed", str(DEMO), REDIS_URL=redis_url)
    assert seeded.popen.returncode == 0, seeded.output
    assert seeded.out == [f"seeded 4 subscribers from {DEMO}"]
    assert not marked(seeded.mark)


def test_reindex_rebuilds_the_recovery_indexes_of_a_given_redis(ussdgw: Callable[..., Command],
                                                                redis_server: EmbeddedRedis) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.hset("sub:{79161234567}:outbox", "mt-1", "sealed")  # an MT queued with no recovery entry
        client.zadd("outbox:index", {"79161234567": 1.0})  # the global index of before the buckets
        done = run(ussdgw, "reindex", REDIS_URL=redis_server.url)
        assert done.popen.returncode == 0, done.output
        assert done.out == ["reindexed: 1 queued MTs, 0 open holds, 0 N2 applications"]
        assert not client.exists("outbox:index")
        assert any(client.zscore(f"idx:mt:{{b{b}}}", "79161234567|mt-1") for b in range(64))
    finally:
        client.delete("sub:{79161234567}:outbox", *(f"idx:mt:{{b{b}}}" for b in range(64)))
        client.close()


def test_seed_without_redis_starts_and_stops_its_own(ussdgw: Callable[..., Command], tmp_path: Path) -> None:
    seeded = run(ussdgw, "seed", str(DEMO))
    assert seeded.popen.returncode == 0, seeded.output
    seeded.wait_line(r'"event": ?"redis_started"', stderr=True, timeout=0)
    seeded.wait_line(r'"event": ?"redis_stopped"', stderr=True, timeout=0)
    assert not left_over(seeded.mark)
    assert [p.name for p in (tmp_path / "state" / "redis").glob("appendonly*")]  # the data stays, for `up`


def test_scenario_runs_a_shipped_file_and_writes_junit(ussdgw: Callable[..., Command], tmp_path: Path) -> None:
    junit = tmp_path / "out.xml"
    command = ussdgw("scenario", str(ROOT / "scenarios" / "r9_help.yaml"), "--junit", str(junit))
    wait_process(command.mark, "redis-server")
    assert command.finish(STARTUP_S) == 0, command.output
    command.wait_line(r"^1 passed, 0 failed", timeout=0)
    assert 'failures="0"' in junit.read_text(encoding="utf-8")
    assert not left_over(command.mark)


def test_load_runs_a_short_bounded_load(ussdgw: Callable[..., Command]) -> None:
    command = ussdgw("load", "--phones", "4", "--rate", "20", "--duration", "1", "--json")
    wait_process(command.mark, "ussdgw.app gateway")
    assert command.finish(STARTUP_S) == 0, command.output
    result = json.loads(command.wait_line(r"^\{.*\}$", timeout=0).group(0))
    assert result["all"]["completed"] > 0 and result["all"]["lost"] == 0, result
    assert not left_over(command.mark)


# ---- several gateway processes under one supervisor -------------------------------------------
def gateway_workers(command: Command, count: int, timeout: float = STARTUP_S) -> dict[str, Proc]:
    """The live worker processes of a `--workers` / `--gateways` command, by index, once `count` run."""
    deadline = time.monotonic() + timeout
    while True:
        found = {m.group(1): p for p in marked(command.mark)
                 if p.pid != command.popen.pid and (m := re.search(r" --worker (\d+)$", p.cmdline))}
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} workers within {timeout:g} s\n{command.output}"
        time.sleep(0.05)


def test_gateway_workers_each_bind_a_killed_one_comes_back_and_sigint_stops_all(
        ussdgw: Callable[..., Command]) -> None:
    smsc = ussdgw("smsc")
    endpoints = smsc.endpoints()
    smpp = endpoints["smsc"].removeprefix("smpp://")
    # No REDIS_URL: the supervisor starts the one embedded Redis the workers share.
    gateway = ussdgw("gateway", "--smsc", smpp, "--system-id", "ussdgw", "--password", "ussdgw1",
                     "--workers", "2")
    gateway.wait_line(r"^ussdgw gateway: 2 worker processes under this supervisor")
    workers = gateway_workers(gateway, 2)
    assert sorted(workers) == ["1", "2"], gateway.output
    assert len([p for p in marked(gateway.mark) if "redis-server" in p.cmdline]) == 1, gateway.output
    # each worker is a whole gateway with its own bind
    deadline = time.monotonic() + STARTUP_S
    while sum(line == "ussdgw gateway is up:" for line in gateway.out) < 2:
        assert time.monotonic() < deadline, gateway.output
        time.sleep(0.05)
    bound = [line for line in gateway.out if line.strip() == f"gateway   bound to {smpp}"]
    assert len(bound) == 2, gateway.output
    # a message goes through the workers (either may take it)
    sms = run(ussdgw, "sms", "--from", "79161234567", "--to", "3339", "HELP", "--api", endpoints["simulator"])
    assert sms.popen.returncode == 0 and sms.out[1].startswith("← 3339: "), sms.output

    # SIGKILL one: the supervisor starts worker 2 again, as a new process
    killed = workers["2"]
    os.kill(killed.pid, signal.SIGKILL)
    deadline = time.monotonic() + STARTUP_S
    while (again := gateway_workers(gateway, 2)["2"]).pid == killed.pid or not again.alive():
        assert time.monotonic() < deadline, f"worker 2 not restarted\n{gateway.output}"
        time.sleep(0.05)
    gateway.wait_line(r'(?=.*"event": ?"worker_died")(?=.*"worker": ?2\b)', stderr=True, timeout=5)
    assert workers["1"].alive(), "the other worker was touched"
    deadline = time.monotonic() + STARTUP_S
    while sum(line == "ussdgw gateway is up:" for line in gateway.out) < 3:  # the new one bound too
        assert time.monotonic() < deadline, gateway.output
        time.sleep(0.05)

    # one SIGINT to the supervisor stops every worker in order, and its Redis; no child left
    assert_stops_cleanly(gateway, smsc)
    for index in ("1", "2"):
        gateway.wait_line(rf'(?=.*"event": ?"worker_stopped")(?=.*"worker": ?{index}\b)', stderr=True, timeout=0)
    assert [p.pid for p in marked(gateway.mark) if p.pid != smsc.popen.pid] == [], gateway.output
    assert_stops_cleanly(smsc)
