"""The configuration is validated at start-up and every error names the bad key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import ConfigError, Endpoint, load_settings
from relay.cli import main
from tests.support import TEST_ENV, write_config

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "relay.toml"


def test_shipped_config_loads() -> None:
    s = load_settings(SHIPPED, {**TEST_ENV, "RELAY_DEMO_SIGNING_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    assert s.server.port == 8080 and s.server.max_body_bytes == 262144
    assert s.sources["default"].seller_id == "1303908"
    assert s.endpoints["demo"].concurrent is False
    assert "whsec" not in repr(s)  # secrets never show in repr


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "relay.toml"
    p.write_text(text)
    return p


BASE = '[[sources]]\nname = "default"\nsecret_key_env = "TCO_SECRET_KEY"\n'


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (BASE + '[server]\nport = "eighty"\n', "server.port = 'eighty'"),
        (BASE + "[server]\nprot = 1\n", "server.prot: unknown key"),
        (BASE.replace('"default"', '"Bad Name"'), "the 1st [[sources]]: name = 'Bad Name': expected 1 to 40 lowercase"),
        (
            BASE + 'min_signature = "sha1"\n',
            "source 'default': min_signature = 'sha1': must be 'md5', 'sha256' or 'sha3-256'",
        ),
        (
            BASE + '[[endpoints]]\nname = "b"\nurl = "ftp://x"\n',
            "endpoint 'b': url = 'ftp://x': expected an http:// or https:// URL",
        ),
        (
            BASE + '[[endpoints]]\nname = "b"\nurl = "http://x"\nsources = ["nope"]\n',
            "'nope' is not a configured source",
        ),
        (
            BASE + '[[endpoints]]\nname = "b"\nurl = "http://x"\ntimeout = -1\n',
            "endpoint 'b': timeout = -1: must be greater than 0",
        ),
        (BASE + '[[endpoints]]\nname = "b"\nurl = "http://x"\nformat = "xml"\n', "endpoint 'b': format = 'xml'"),
        # brackets that hold no IPv6 address, or left open: health and check-endpoints raised on them
        (BASE + '[[endpoints]]\nname = "b"\nurl = "http://[zz]/h"\n', "endpoint 'b': url = 'http://[zz]/h': not a URL"),
        (BASE + '[[endpoints]]\nname = "b"\nurl = "http://[::1/h"\n', "endpoint 'b': url = 'http://[::1/h': not a URL"),
        (BASE + '[[endpoints]]\nname = "b"\nurl = "http://x"\nretry_4xx = [500]\n', "endpoint 'b': retry_4xx[0] = 500"),
        ("[[sources]]\n", "the 1st [[sources]]: name: is required"),
        ("x = = 1", "not valid TOML"),
        (
            BASE + '[[endpoints]]\nname = "b"\nurl = "http://x"\n[[endpoints]]\nname = "b"\nurl = "http://y"\n',
            "name 'b' is used 2 times",
        ),
        # the admin listener on the public one's address: relay serve stopped with "address already in
        # use" (exit 3) although nothing else held the port
        (
            "[server]\nport = 9000\n[admin]\nport = 9000\n" + BASE,
            "admin.port = 9000: is [server] port too (on 127.0.0.1); [admin] port = 0 serves the admin routes",
        ),
        (
            '[server]\nport = 9000\nhost = "0.0.0.0"\n[admin]\nport = 9000\n' + BASE,
            "admin.port = 9000: is [server] port too",
        ),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(_write(tmp_path, text), TEST_ENV)
    assert needle in str(exc.value)


@pytest.mark.parametrize(
    ("server", "admin"), [("0.0.0.0", "::1"), ("::", "127.0.0.1"), ("0.0.0.0", "::"), ("127.0.0.1", "127.0.0.2")]
)
def test_an_admin_listener_on_the_public_port_of_another_address_family_loads(
    tmp_path: Path, server: str, admin: str
) -> None:
    """A wildcard holds the port for its own address family only (an IPv6 socket binds IPV6_V6ONLY), so
    these pairs both bind: the check that refuses a real clash refused them as "is [server] port too"."""
    text = f'[server]\nport = 9000\nhost = "{server}"\n[admin]\nport = 9000\nhost = "{admin}"\n' + BASE
    settings = load_settings(_write(tmp_path, text), TEST_ENV)
    assert (settings.server.port, settings.admin.port, settings.admin.host) == (9000, 9000, admin)


def test_more_than_eight_endpoints_per_route(tmp_path: Path) -> None:
    eps = [{"name": f"e{i}", "url": f"http://127.0.0.1:1/{i}", "channels": ["ipn"]} for i in range(9)]
    with pytest.raises(ConfigError, match="9 endpoints receive source 'default' channel 'ipn'; at most 8"):
        load_settings(write_config(tmp_path / "r.toml", endpoints=eps), TEST_ENV)
    # eight is fine, and so are nine spread over channels
    eps[8]["channels"] = ["lcn"]
    assert len(load_settings(write_config(tmp_path / "r.toml", endpoints=eps), TEST_ENV).endpoints) == 9


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "r.toml",
        endpoints=[
            {
                "name": "b",
                "url": "http://x",
                "signing_secret_env": "SINK_SECRET",
                "headers": {"Authorization": "${BILLING_TOKEN}", "X-Static": "v"},
            }
        ],
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(path, {"TCO_INS_SECRET_WORD": "w", "SINK_SECRET": "nope"})
    msg = str(exc.value)
    assert "source 'default': secret_key_env = 'TCO_SECRET_KEY': environment variable TCO_SECRET_KEY is not set" in msg
    assert "endpoint 'b': headers.Authorization = 'BILLING_TOKEN'" in msg
    assert "must look like whsec_" in msg
    s = load_settings(path, {**TEST_ENV, "BILLING_TOKEN": "Bearer t0k"})
    assert s.endpoints["b"].headers["Authorization"].reveal() == "Bearer t0k"
    assert "t0k" not in repr(s)


def test_sources_and_endpoints_are_frozen_views_of_the_validated_file(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "r.toml",
        endpoints=[
            {
                "name": "b",
                "url": "http://x",
                "concurrent": True,
                "max_in_flight": 3,
                "retry_delays": [1, 2.5],
                "message_types": ["ORDER_CREATED"],
                "retry_4xx": [409],
                "channels": ["ipn", "ins"],
            }
        ],
    )
    s = load_settings(path, TEST_ENV)
    ep, cfg = s.endpoints["b"], s.file.endpoints[0]
    # every field the file declares under the same name is carried over, lists frozen
    # resolved, not copied: headers (${VAR}s), mode (or its alias concurrent), match (compiled), rate_burst (1)
    for name in Endpoint.model_fields:
        if name in type(cfg).model_fields and name not in ("headers", "mode", "concurrent", "match", "rate_burst"):
            value = getattr(cfg, name)
            assert getattr(ep, name) == (
                tuple(value) if name == "retry_delays" else frozenset(value) if isinstance(value, list) else value
            ), name
    assert ep.retry_delays == (1.0, 2.5) and ep.channels == frozenset({"ipn", "ins"})
    assert (ep.mode, ep.concurrent, ep.in_flight_limit) == ("concurrent", True, 3)
    assert ep.message_types == frozenset({"ORDER_CREATED"}) and ep.retry_4xx == frozenset({409})
    assert ep.in_flight_limit == 3 and ep.order_statuses is None and ep.signing_secret is None
    src = s.sources["default"]
    assert src.channels == frozenset({"ipn", "lcn", "ins"}) and src.allow_networks == ()
    assert src.secret_key is not None and src.secret_key.reveal() == TEST_ENV["TCO_SECRET_KEY"]
    hash(src)  # frozen and hashable, as before


def test_cli_reports_config_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, BASE + "[server]\nport = 0\n")
    assert main(["--config", str(path), "serve"]) == 2
    err = capsys.readouterr().err
    assert "server.port = 0" in err and "Traceback" not in err
    assert main(["--config", str(tmp_path / "missing.toml"), "serve"]) == 2
    assert "configuration file not found" in capsys.readouterr().err


def test_unknown_event_type_is_a_startup_error_listing_the_known_ones(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        BASE + '[[endpoints]]\nname = "b"\nurl = "http://x"\nformat = "event"\n'
        'event_types = ["order.refunded", "order.refundd"]\n',
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(path, TEST_ENV)
    text = str(exc.value)
    assert "endpoint 'b': event_types" in text and "'order.refundd'" in text
    assert "known: order.created, order.authorized" in text and "2checkout.unmapped" in text
    ok = _write(
        tmp_path,
        BASE + '[[endpoints]]\nname = "b"\nurl = "http://x"\nformat = "event"\n'
        'event_types = ["order.refunded", "order.chargeback"]\n',
    )
    endpoint = load_settings(ok, TEST_ENV).endpoints["b"]
    assert endpoint.format == "event" and endpoint.event_types == {"order.refunded", "order.chargeback"}


def test_a_config_error_names_the_endpoint_and_says_the_rule_in_words(tmp_path: Path) -> None:
    text = (
        BASE + '[[endpoints]]\nname = "billing"\nurl = "http://x"\n[[endpoints]]\nname = "crm"\n'
        'url = "ftp://crm.internal/"\nsigning_secret_env = "9lives"\n[[endpoints]]\nname = "Bad Name"\n'
        'url = "http://y"\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(_write(tmp_path, text), TEST_ENV)
    msg = str(exc.value)
    assert "endpoint 'crm': url = 'ftp://crm.internal/': expected an http:// or https:// URL" in msg
    assert "endpoint 'crm': signing_secret_env = '9lives': expected an environment variable name" in msg
    assert "the 3rd [[endpoints]]: name = 'Bad Name': expected 1 to 40 lowercase letters" in msg
    # never the list index, never a regex
    assert "endpoints[" not in msg and "pattern" not in msg and "^" not in msg


def test_an_endpoint_or_source_key_is_declared_once() -> None:
    """A key used as written is declared only in the shared base; only a key whose runtime form differs
    (a list read as a set, a variable's name resolved to its secret) is declared by schema and runtime."""
    from config.endpoint import EndpointConfig, EndpointFields
    from config.settings import Source, SourceConfig
    from config.source import SourceFields

    for base, schema, runtime, converted in (
        (
            EndpointFields,
            EndpointConfig,
            Endpoint,
            {
                "sources",
                "channels",
                "mode",
                "concurrent",
                "rate_burst",
                "retry_delays",
                "headers",
                "event_types",
                "message_types",
                "order_statuses",
                "match",
                "retry_4xx",
            },
        ),
        (SourceFields, SourceConfig, Source, {"channels", "allow_networks"}),
    ):
        own_schema, own_runtime = set(schema.__annotations__), set(runtime.__annotations__)
        assert not (set(base.model_fields) & (own_schema | own_runtime)), base.__name__
        assert own_schema & own_runtime == converted, base.__name__
        assert set(base.model_fields) <= set(schema.model_fields) & set(runtime.model_fields)


def test_every_section_is_read_the_same_way(tmp_path: Path) -> None:
    s = load_settings(write_config(tmp_path / "r.toml"), TEST_ENV)
    sections = [name for name in type(s.file).model_fields if name not in ("sources", "endpoints")]
    assert sections == ["server", "admin", "redis", "delivery", "logging", "health", "alerts"]
    for name in sections:
        assert getattr(s, name) is getattr(s.file, name), name


def test_the_config_files_path_is_decided_in_one_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    from config.settings import DEFAULT_CONFIG_PATH, config_path

    root = Path(__file__).resolve().parent.parent
    # $RELAY_CONFIG read, or the default spelt, anywhere in the product: only config/settings.py
    decided = re.compile(r"""get\(\s*["']RELAY_CONFIG|["']config/relay\.toml["']""")
    files = {
        str(p.relative_to(root))
        for top in ("relay", "workers", "config")
        for p in (root / top).rglob("*.py")
        if decided.search(p.read_text(encoding="utf-8"))
    }
    assert files == {"config/settings.py"}
    assert config_path(None, {}) == DEFAULT_CONFIG_PATH == Path("config/relay.toml")
    assert config_path(None, {"RELAY_CONFIG": "a.toml"}) == Path("a.toml")
    assert config_path("b.toml", {"RELAY_CONFIG": "a.toml"}) == Path("b.toml")
    # the CLI asks it too: $RELAY_CONFIG names the file when --config is absent
    monkeypatch.setenv("RELAY_CONFIG", str(tmp_path / "nowhere.toml"))
    assert main(["serve"]) == 2
    assert f"{tmp_path / 'nowhere.toml'}: configuration file not found" in capsys.readouterr().err


@pytest.mark.parametrize("required", [True, False])
@pytest.mark.parametrize("variable", ["TCO_SECRET_KEY", "RELAY_ADMIN_TOKEN"])
def test_a_secret_that_is_not_utf8_is_named(tmp_path: Path, required: bool, variable: str) -> None:
    """Bytes that are not UTF-8 in a secret's variable reach Python as surrogates: the relay started, then
    every notification (the HMAC key's .encode()) or every admin API call answered 500, and relay
    send-test raised a traceback."""
    env = {**TEST_ENV, variable: "abc\udcff"}
    with pytest.raises(ConfigError) as exc:
        load_settings(_write(tmp_path, BASE), env, require_secrets=required)
    assert variable in str(exc.value) and "not UTF-8" in str(exc.value)


def test_a_file_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """An editor that writes UTF-8 with a BOM (Windows Notepad) made a valid file 'not valid TOML: Invalid
    statement (at line 1, column 1)', pointing at nothing visible."""
    path = tmp_path / "relay.toml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert list(load_settings(path, TEST_ENV).sources) == ["default"]


def test_problems_across_sections_are_one_line_each(tmp_path: Path) -> None:
    """They were joined on one line behind '(top level):', which names nothing an operator can find."""
    text = (
        "[server]\nport = 9000\n[admin]\nport = 9000\n"
        + BASE
        + '[[endpoints]]\nname = "b"\nurl = "http://x"\n[[endpoints]]\nname = "b"\nurl = "http://y"\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(_write(tmp_path, text), TEST_ENV)
    lines = str(exc.value).splitlines()
    assert "(top level)" not in str(exc.value), lines
    assert lines[1:] == [
        "  endpoints: name 'b' is used 2 times",
        "  admin.port = 9000: is [server] port too (on 127.0.0.1); [admin] port = 0 serves the admin routes on "
        "the public listener, or give them a port of their own",
    ], lines
