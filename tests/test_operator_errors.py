"""The usual operator mistakes end in one line and a documented exit code (relay/cli/__init__.py,
docs/operations.md), never a traceback: real `relay` processes where the process itself is the point (a
listen address, a closed pipe), else the command run in the test process (tests/cli.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.support import TEST_ENV, RedisServer, free_port, write_config

EXIT_RUNTIME, EXIT_CONFIG, EXIT_LISTEN, EXIT_BROKEN_PIPE = 1, 2, 3, 141
EXIT_HEALTH_UNKNOWN = 3


def relay(
    config: Path, *args: str, redis_url: str | None, stdout: int = subprocess.PIPE, close_stdout: bool = False
) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | TEST_ENV
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "--config", str(config), *args],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=config.parent,
    )
    if close_stdout:
        assert proc.stdout is not None
        proc.stdout.close()  # the reader goes away before anything is written, as `| head` does
        _, err = proc.communicate(timeout=60)
        return proc.returncode, "", err.decode()
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out.decode(), err.decode()


def in_process(config: Path, *args: str, redis_url: str | None) -> tuple[int, str, str]:
    """For a mistake found before a command starts anything (its arguments, its configuration)."""
    done = run_cli("--config", str(config), *args, redis_url=redis_url, cwd=config.parent)
    return done.returncode, done.stdout, done.stderr


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_without_redis_url_stop_naming_it_and_relay_dev(tmp_path: Path, command: str) -> None:
    redis_port = free_port()
    config = write_config(tmp_path / "relay.toml", redis_port=redis_port)
    code, _, err = in_process(config, command, redis_url=None)
    line = one_line(err)
    assert code == EXIT_CONFIG
    assert "REDIS_URL" in line and "relay dev" in line
    # and no embedded Redis was started behind the operator's back
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", redis_port)) != 0


@pytest.mark.parametrize(
    "url",
    [
        "htp://127.0.0.1:6379/0",
        "redis://127.0.0.1:notaport/0",
        "redis+sentinel:///",
        # bytes that are not UTF-8 (a surrogate here): a traceback from the client's .encode()
        "redis://:s3cr\udcff@127.0.0.1:6379/0",
        # brackets left open or holding no IPv6 address: urlsplit's ValueError, raised again by the
        # message's own safe_url, was a traceback
        "redis://u:s3cret@[::1:6379/0",
        "redis://u:s3cret@[zz]:6379/0",
    ],
)
@pytest.mark.parametrize("command", ["serve", "worker", "health", "notifications"])
def test_a_malformed_redis_url_is_a_configuration_error(tmp_path: Path, url: str, command: str) -> None:
    config = write_config(tmp_path / "relay.toml")
    code, _, err = in_process(config, *([command, "list"] if command == "notifications" else [command]), redis_url=url)
    line = one_line(err)
    assert "s3cr" not in err, err
    # `relay health` follows the monitoring-plugin convention: cannot evaluate is 3 (UNKNOWN), since
    # its 2 means CRITICAL (README, "Health and alerts")
    expected = EXIT_HEALTH_UNKNOWN if command == "health" else EXIT_CONFIG
    assert code == expected and "REDIS_URL" in line, line


@pytest.mark.parametrize("command", ["serve", "worker", "health"])
def test_a_redis_url_without_its_scheme_is_named_as_typed_and_its_password_hidden(tmp_path: Path, command: str) -> None:
    # the message read "REDIS_URL 'relay://s3cret@redis.internal:6379' is not usable": the password shown
    config = write_config(tmp_path / "relay.toml")
    code, _, err = in_process(config, command, redis_url="relay:s3cret@redis.internal:6379")
    line = one_line(err)
    assert "'relay:***@redis.internal:6379'" in line and "s3cret" not in err, line


@pytest.mark.parametrize("args", [("notifications", "list"), ("resend", "ipn_" + "0" * 24)])
def test_a_refusing_redis_is_one_line_exit_1(tmp_path: Path, args: tuple[str, ...]) -> None:
    config = write_config(tmp_path / "relay.toml")
    code, _, err = in_process(config, *args, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    line = one_line(err)
    assert code == EXIT_RUNTIME and "cannot reach Redis" in line, line


def test_a_port_in_use_is_one_line_exit_3(tmp_path: Path, redis_server: RedisServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "relay.toml", extra=f'[server]\nport = {port}\nhost = "127.0.0.1"\n')
        code, _, err = relay(config, "serve", redis_url=redis_server.url)
    lines = [line for line in err.strip().splitlines() if line.startswith("relay:")]
    assert code == EXIT_LISTEN, err
    assert "Traceback" not in err and len(lines) == 1 and str(port) in lines[0], err
    assert lines[0].count(str(port)) == 1 and "address already in use" in lines[0], lines[0]  # said once


@pytest.mark.parametrize("args", [("health",), ("health", "--json"), ("notifications", "list")])
def test_output_piped_into_a_reader_that_leaves_exits_quietly(
    tmp_path: Path, redis_server: RedisServer, args: tuple[str, ...]
) -> None:
    config = write_config(tmp_path / "relay.toml")
    code, _, err = relay(config, *args, redis_url=redis_server.url, close_stdout=True)
    assert code == EXIT_BROKEN_PIPE and err == "", err


@pytest.mark.parametrize("host", ["no-such-host.invalid", "256.1.1.1"])
def test_a_listen_host_that_does_not_resolve_is_one_line_exit_3(
    tmp_path: Path, redis_server: RedisServer, host: str
) -> None:
    config = write_config(tmp_path / "relay.toml")
    code, _, err = relay(config, "serve", "--host", host, "--port", str(free_port()), redis_url=redis_server.url)
    lines = [line for line in err.strip().splitlines() if line.startswith("relay:")]
    assert code == EXIT_LISTEN, err
    assert "Traceback" not in err and len(lines) == 1 and host in lines[0], err


@pytest.mark.parametrize("port", ["99999", "-1", "0"])
def test_a_listen_port_out_of_range_is_a_usage_error(tmp_path: Path, redis_server: RedisServer, port: str) -> None:
    # 99999 used to be handed to the event loop, which bound it modulo 65536 (34463) and logged
    # "listening" on a port that does not exist
    config = write_config(tmp_path / "relay.toml")
    code, _, err = in_process(config, "serve", "--port", port, redis_url=redis_server.url)
    assert code == EXIT_CONFIG, err
    assert "Traceback" not in err and "--port" in err and port in err, err


@pytest.mark.parametrize("workers", ["0", "-1", "65"])
def test_relay_dev_workers_out_of_range_is_a_usage_error(tmp_path: Path, workers: str) -> None:
    # 0 and -1 silently started one worker (max(1, n)); 65 would start 65 worker processes
    config = write_config(tmp_path / "relay.toml")
    code, _, err = in_process(config, "dev", "--workers", workers, redis_url="")
    assert code == EXIT_CONFIG, err
    assert "Traceback" not in err and "--workers" in err and workers in err, err


@pytest.mark.parametrize("host", ["127.0.0.1", "10.254.254.254", "no-such-host.invalid"])
def test_relay_demo_sink_on_an_address_it_cannot_listen_on_is_one_line_exit_3(tmp_path: Path, host: str) -> None:
    # a port in use, an address not on this machine, a name that does not resolve: each was a traceback, exit 1
    config = write_config(tmp_path / "relay.toml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = relay(config, "demo-sink", "--host", host, "--port", str(port), redis_url=None)
    assert code == EXIT_LISTEN, err
    assert "Traceback" not in err and one_line(err).startswith("relay: cannot listen") and host in err, err


@pytest.mark.parametrize(
    "url", ["notaurl", "127.0.0.1:8080", "ftp://127.0.0.1:8080", "http://", "http://127.0.0.1:99999", "http://\udcff"]
)
def test_send_test_with_a_url_that_is_not_one_is_a_usage_error(tmp_path: Path, url: str) -> None:
    # it was "cannot reach the relay at notaurl/ipn (InvalidUrlClientError ...); is relay serve running?", exit 1
    config = write_config(tmp_path / "relay.toml")
    code, _, err = in_process(config, "send-test", "--url", url, redis_url="")
    assert code == EXIT_CONFIG, err
    assert "Traceback" not in err and "--url" in err and repr(url) in err, err


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1:8080/", "http://[zz]/"])
def test_send_test_with_a_url_whose_brackets_hold_no_address_says_what_it_expects(tmp_path: Path, url: str) -> None:
    # urlsplit raises ValueError on these, which argparse reported as "invalid base_url value: ...",
    # naming a function of the relay's and not what --url takes
    config = write_config(tmp_path / "relay.toml")
    code, _, err = in_process(config, "send-test", "--url", url, redis_url="")
    assert code == EXIT_CONFIG, err
    assert f"invalid --url {url!r}: expected http://host:port or https://host" in err, err


@pytest.mark.parametrize(("channel", "variable"), [("ipn", "TCO_SECRET_KEY"), ("ins", "TCO_INS_SECRET_WORD")])
def test_send_test_without_its_secret_names_the_variable(tmp_path: Path, channel: str, variable: str) -> None:
    # it said "set the variable its secret_key_env names", and left the operator to look the name up
    config = write_config(tmp_path / "relay.toml")
    done = run_cli("--config", str(config), "send-test", "--channel", channel, cwd=tmp_path, drop=(variable,))
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert variable in one_line(done.stderr), done.stderr


def test_serve_port_on_the_admin_listeners_port_is_a_usage_error(tmp_path: Path, redis_server: RedisServer) -> None:
    # it stopped with "address already in use" (exit 3), which sends the operator looking for another process
    port = free_port()
    config = write_config(tmp_path / "relay.toml", admin={"port": port})
    code, _, err = in_process(config, "serve", "--port", str(port), redis_url=redis_server.url)
    assert code == EXIT_CONFIG, err
    assert one_line(err).startswith(f"relay: --port {port}: is [admin] port too"), err


@pytest.mark.parametrize("mtype", ["\udcff", "ORDER\nCREATED", "", "X" * 65])
def test_send_test_message_type_that_cannot_be_sent_is_a_usage_error(tmp_path: Path, mtype: str) -> None:
    # undecodable bytes raised UnicodeEncodeError as the body was encoded (a traceback)
    config = write_config(tmp_path / "relay.toml")
    code, _, err = in_process(config, "send-test", "--message-type", mtype, "--url", "http://127.0.0.1:9", redis_url="")
    assert code == EXIT_CONFIG, err
    assert "Traceback" not in err and "--message-type" in err, err


@pytest.mark.parametrize("content", ["not json{", '["a list"]', '{"RELAY_ADMIN_TOKEN": 5}'])
def test_relay_dev_with_a_damaged_dev_secrets_file_is_one_line_exit_2(tmp_path: Path, content: str) -> None:
    # a file cut short or edited by hand raised JSONDecodeError (a traceback) before anything started
    # free ports throughout: were the file read as before, relay dev would start (a real process: it
    # sets signal handlers, which a command run in the test's thread cannot)
    config = write_config(
        tmp_path / "relay.toml", redis_port=free_port(), admin={"port": 0}, extra=f"[server]\nport = {free_port()}\n"
    )
    (tmp_path / ".relay").mkdir()
    (tmp_path / ".relay" / "dev-secrets.json").write_text(content)
    code, _, err = relay(config, "dev", "--no-demo-sink", redis_url=None)
    assert code == EXIT_CONFIG, err
    assert "dev-secrets.json" in one_line(err), err


def test_relay_dev_with_a_redis_data_dir_it_cannot_create_is_one_line_exit_2(tmp_path: Path) -> None:
    # [redis] data_dir under a file (or anywhere not writable): mkdir raised, a traceback
    (tmp_path / "afile").write_text("")
    config = write_config(
        tmp_path / "relay.toml", redis_port=free_port(), admin={"port": 0}, extra=f"[server]\nport = {free_port()}\n"
    )
    config.write_text(config.read_text().replace(str(tmp_path / "redis-data"), str(tmp_path / "afile" / "redis")))
    code, _, err = relay(config, "dev", "--no-demo-sink", redis_url=None)
    lines = [line for line in err.splitlines() if line.startswith("relay:")]  # after relay dev's notes
    assert code == EXIT_CONFIG, err
    assert "Traceback" not in err and len(lines) == 1 and "data_dir" in lines[0] and "afile" in lines[0], err


def test_relay_dev_where_it_cannot_keep_its_dev_secrets_is_one_line_exit_2(tmp_path: Path) -> None:
    # .relay a file (or a directory it cannot write): writing the generated secrets raised, a traceback
    config = write_config(
        tmp_path / "relay.toml", redis_port=free_port(), admin={"port": 0}, extra=f"[server]\nport = {free_port()}\n"
    )
    (tmp_path / ".relay").write_text("")
    code, _, err = relay(config, "dev", "--no-demo-sink", redis_url=None)
    lines = [line for line in err.splitlines() if line.startswith("relay:")]
    assert code == EXIT_CONFIG, err
    assert "Traceback" not in err and len(lines) == 1 and "dev-secrets.json" in lines[0], err
