"""The embedded Redis of the local run: started, reused only when it is ours, stopped on SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from config.settings import load_settings
from relay.store.connection import RedisUnavailable, answers_ping, start_embedded
from tests.procs import RelayProcess
from tests.support import TEST_ENV, RedisServer, free_port, write_config


def test_a_foreign_redis_on_the_embedded_port_is_not_silently_reused(tmp_path: Path) -> None:
    other = RedisServer().start()
    try:
        path = write_config(tmp_path / "relay.toml", redis_port=other.port)
        settings = load_settings(path, TEST_ENV)
        with pytest.raises(RedisUnavailable, match="already has a redis-server keeping its data in"):
            start_embedded(settings)
        # its own data dir: reused (that is how web and worker share one embedded server)
        path.write_text(path.read_text().replace(str(tmp_path / "redis-data"), str(other.dir)))
        assert start_embedded(load_settings(path, TEST_ENV)) is None
    finally:
        other.cleanup()


def test_relay_dev_stops_everything_on_sigterm(tmp_path: Path) -> None:
    redis_port, web, admin = free_port(), free_port(), free_port()
    config = write_config(
        tmp_path / "relay.toml", redis_port=redis_port, admin={"port": admin}, extra=f"[server]\nport = {web}\n"
    )
    dev = RelayProcess(config, None, "dev", "--no-demo-sink", cwd=tmp_path)
    proc = dev.proc
    try:
        deadline = time.monotonic() + 20
        while not (answers_ping(redis_port) and _port_open(web)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answers_ping(redis_port) and _port_open(web)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        deadline = time.monotonic() + 15
        while (answers_ping(redis_port) or _port_open(web)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not answers_ping(redis_port), "the embedded redis-server outlived relay dev"
        assert not _port_open(web), "relay serve outlived relay dev"
    finally:
        dev.kill()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False
