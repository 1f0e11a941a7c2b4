"""fleetd configuration: each source, precedence, value syntax, and every error path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd import config as config_module
from fleetd.config import (
    Config,
    ConfigError,
    help_text,
    is_tcp_address,
    load_config,
    parse_duration,
)


@pytest.fixture(autouse=True)
def no_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default path at a file that does not exist, whatever the host has in /etc."""
    path = tmp_path / "default-fleet.conf"
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", str(path))
    return path


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    """An API token file fleetd accepts: a regular file, mode 0600."""
    path = tmp_path / "token"
    path.write_text("s3cret\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def write(tmp_path: Path, text: str, name: str = "fleet.conf") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def via(
    source: str, option: str, raw: str, tmp_path: Path, environ: dict[str, str] | None = None
) -> Config:
    """Load a config where `option` is set to `raw` by one source: file, env or flag."""
    environ = dict(environ or {})
    if source == "file":
        return load_config(["--config", write(tmp_path, f"{option}={raw}\n")], environ)
    if source == "env":
        return load_config([], {**environ, f"FLEET_{option.upper()}": raw})
    return load_config([f"--{option.replace('_', '-')}={raw}"], environ)


def source_label(source: str, option: str, path: str) -> str:
    return {
        "file": f"{path}:1",
        "env": f"environment variable FLEET_{option.upper()}",
        "flag": f"flag --{option.replace('_', '-')}",
    }[source]


SOURCES = ["file", "env", "flag"]


# --- defaults and each source --------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    config = load_config([], {})
    assert config == Config()
    assert config.etcd_servers == ("http://127.0.0.1:2379",)
    assert config.etcd_key_prefix == "/fleet/"
    assert config.agent_ttl == 10.0
    assert config.listen == ("/var/run/fleet.sock",)
    assert config.token_limit == 100
    assert config.config_file == ""


def test_default_path_is_read_when_it_exists(no_default_file: Path) -> None:
    no_default_file.write_text("public_ip=192.0.2.7\n", encoding="utf-8")
    config = load_config([], {})
    assert config.public_ip == "192.0.2.7"
    assert config.config_file == str(no_default_file)


def test_a_full_config_file(tmp_path: Path, token_file: str) -> None:
    path = write(
        tmp_path,
        f"""# fleet.conf as fleet's functional tests write it
        verbosity=2
        etcd_servers=["http://172.18.0.1:4001","http://172.18.0.2:4001"]
        ; another comment style
        etcd_key_prefix=/fleet_functional/smoke
        public_ip = 172.18.1.3
        agent_ttl=3s
        metadata="region=us-west, az=us-west-1"
        engine_reconcile_interval='500ms'
        disable_engine=yes
        disable_agent=0
        listen=/run/fleet.sock,127.0.0.1:49153
        api_token_file={token_file}
        machine_id_file=/tmp/machine-id
        etcd_request_timeout=1.5

        etcd_cafile=/etc/ssl/etcd-ca.pem
        """,
    )
    config = load_config(["--config", path], {})
    assert config == Config(
        verbosity=2,
        etcd_servers=("http://172.18.0.1:4001", "http://172.18.0.2:4001"),
        etcd_key_prefix="/fleet_functional/smoke/",
        public_ip="172.18.1.3",
        agent_ttl=3.0,
        metadata=(("az", "us-west-1"), ("region", "us-west")),
        engine_reconcile_interval=0.5,
        disable_engine=True,
        disable_agent=False,
        listen=("/run/fleet.sock", "127.0.0.1:49153"),
        api_token_file=token_file,
        machine_id_file="/tmp/machine-id",
        etcd_request_timeout=1.5,
        etcd_cafile="/etc/ssl/etcd-ca.pem",
        config_file=path,
    )


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    ("option", "raw", "expected"),
    [
        ("etcd_servers", "http://a:2379,https://b:2379", ("http://a:2379", "https://b:2379")),
        ("etcd_servers", '["http://a:2379", "http://b:2379"]', ("http://a:2379", "http://b:2379")),
        ("etcd_key_prefix", "/custom", "/custom/"),
        ("etcd_key_prefix", "/custom/", "/custom/"),
        ("etcd_key_prefix", "/", "/"),
        ("etcd_request_timeout", "2.5", 2.5),
        ("etcd_username", "root", "root"),
        ("public_ip", "2001:db8::1", "2001:db8::1"),
        ("metadata", "b=2,a=1", (("a", "1"), ("b", "2"))),
        ("agent_ttl", "1m30s", 90.0),
        ("agent_ttl", "45", 45.0),
        ("engine_reconcile_interval", "250ms", 0.25),
        ("disable_engine", "true", True),
        ("disable_engine", "No", False),
        ("disable_agent", "1", True),
        ("listen", "[::1]:49153", ("[::1]:49153",)),
        ("api_token_file", "/etc/fleet/token", "/etc/fleet/token"),
        ("machine_id_file", "/run/machine-id", "/run/machine-id"),
        ("verbosity", "3", 3),
        ("token_limit", "500", 500),
        ("token_limit", "65535", 65535),
    ],
)
def test_each_source_sets_each_option(
    source: str, option: str, raw: str, expected: Any, *, tmp_path: Path, token_file: str
) -> None:
    token = {"FLEET_API_TOKEN_FILE": token_file} if option == "listen" else {}  # TCP needs one
    assert getattr(via(source, option, raw, tmp_path, token), option) == expected


# --- precedence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_file", "in_env", "in_flag", "expected"),
    [
        (None, None, None, 10.0),
        ("1s", None, None, 1.0),
        ("1s", "2s", None, 2.0),
        ("1s", None, "3s", 3.0),
        (None, "2s", "3s", 3.0),
        ("1s", "2s", "3s", 3.0),
    ],
)
def test_later_sources_override_earlier_ones(
    in_file: str | None, in_env: str | None, in_flag: str | None, expected: float, tmp_path: Path
) -> None:
    argv = ["--config", write(tmp_path, f"agent_ttl={in_file}\n" if in_file else "")]
    if in_flag:
        argv.append(f"--agent-ttl={in_flag}")
    environ = {"FLEET_AGENT_TTL": in_env} if in_env else {}
    assert load_config(argv, environ).agent_ttl == expected


def test_options_not_overridden_keep_the_earlier_source(tmp_path: Path) -> None:
    path = write(tmp_path, "public_ip=192.0.2.1\nmetadata=a=1\n")
    config = load_config(["--config", path, "--verbosity", "1"], {"FLEET_METADATA": "b=2"})
    assert (config.public_ip, config.metadata, config.verbosity) == ("192.0.2.1", (("b", "2"),), 1)


def test_repeated_listen_flags_replace_the_environment_value() -> None:
    config = load_config(
        ["--listen", "/run/a.sock", "--listen=/run/b.sock"], {"FLEET_LISTEN": "/run/env.sock"}
    )
    assert config.listen == ("/run/a.sock", "/run/b.sock")


def test_each_listen_flag_is_checked_on_its_own() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(["--listen", "/run/a.sock", "--listen", "bad"], {})
    assert (caught.value.source, caught.value.value) == ("flag --listen", "bad")


def test_boolean_flag_without_a_value_is_true_and_can_be_turned_off() -> None:
    assert load_config(["--disable-engine"], {}).disable_engine is True
    environ = {"FLEET_DISABLE_ENGINE": "true"}
    assert load_config(["--disable-engine=false"], environ).disable_engine is False


def test_unknown_and_empty_fleet_variables_are_ignored() -> None:
    environ = {
        "FLEET_ENABLE_GRPC": "true",
        "FLEET_WHATEVER": "x",
        "FLEET_AGENT_TTL": "",
        "PATH": "/",
    }
    assert load_config([], environ) == Config()


def test_go_style_single_dash_config_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "verbosity=2\n")
    assert load_config(["-config", path], {}).verbosity == 2


# --- version, help, arguments --------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--version"], ["-version"], ["version"]])
def test_version_requests(argv: list[str]) -> None:
    assert load_config(argv, {"FLEET_AGENT_TTL": "not a duration"}).show_version is True


def test_help_request_and_text() -> None:
    assert load_config(["--help"], {}).show_help is True
    text = help_text()
    for flag in (
        "--etcd-servers",
        "--metadata",
        "--listen",
        "--config",
        "--disable-agent",
        "FLEET_",
    ):
        assert flag in text


# --- value syntax --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("100us", 1e-4),
        ("100µs", 1e-4),
        ("10ns", 1e-8),
        ("-1m", -60.0),
        ("+3s", 3.0),
        (".5s", 0.5),
        ("0", 0.0),
        ("7", 7.0),
        ("2.25", 2.25),
        (" 4s ", 4.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "1m 30s", "1e3", "inf", "nan", "--1s", "5S"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@given(
    st.integers(0, 99),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
)
def test_duration_components_add_up(hours: int, minutes: int, seconds: int, millis: int) -> None:
    text = f"{hours}h{minutes}m{seconds}s{millis}ms"
    expected = hours * 3600 + minutes * 60 + seconds + millis / 1000
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ()),
        ("region=us-west", (("region", "us-west"),)),
        (" region = us-west , az=1 ", (("az", "1"), ("region", "us-west"))),
        ("a=1,a=2", (("a", "2"),)),  # the last duplicate wins, as in fleet
        ("a=1,", (("a", "1"),)),  # a trailing comma is harmless
        ("url=http://x/?q=1", (("url", "http://x/?q=1"),)),  # split on the first '='
        ("empty=", (("empty", ""),)),
    ],
)
def test_metadata_syntax(raw: str, expected: tuple[tuple[str, str], ...], tmp_path: Path) -> None:
    path = write(tmp_path, f"metadata={raw}\n")
    assert load_config(["--config", path], {}).metadata == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/var/run/fleet.sock", ("/var/run/fleet.sock",)),
        ("127.0.0.1:49153", ("127.0.0.1:49153",)),
        ("localhost:8080", ("localhost:8080",)),
        (":49153", (":49153",)),  # all interfaces, as Go spells it
        ("[::1]:0", ("[::1]:0",)),
        ("/a.sock, /a.sock ,0.0.0.0:1", ("/a.sock", "0.0.0.0:1")),  # repeats dropped
        ("", ()),
    ],
)
def test_listen_syntax(
    raw: str, expected: tuple[str, ...], tmp_path: Path, token_file: str
) -> None:
    path = write(tmp_path, f"listen={raw}\napi_token_file={token_file}\n")
    assert load_config(["--config", path], {}).listen == expected


@pytest.mark.parametrize(
    ("address", "tcp"),
    [("/var/run/fleet.sock", False), ("127.0.0.1:49153", True), (":49153", True)],
)
def test_an_address_is_tcp_unless_it_is_an_absolute_path(address: str, tcp: bool) -> None:
    assert is_tcp_address(address) is tcp


# --- errors: every one names the option, the source and the value --------------------------


BAD_VALUES = [
    ("etcd_servers", "127.0.0.1:2379", "not an http:// or https:// URL"),
    ("etcd_servers", "[]", "at least one"),
    ("etcd_servers", "http://a:port", "Port"),
    ("etcd_key_prefix", "fleet", "must start with '/'"),
    ("etcd_request_timeout", "0", "greater than zero"),
    ("public_ip", "not-an-ip", "does not appear to be"),
    ("metadata", "region", "not a key=value pair"),
    ("metadata", "=x", "not a key=value pair"),
    ("agent_ttl", "10x", "not a duration"),
    ("agent_ttl", "0s", "greater than zero"),
    ("agent_ttl", "-5s", "greater than zero"),
    ("engine_reconcile_interval", "soon", "not a duration"),
    ("disable_engine", "maybe", "not a boolean"),
    ("disable_agent", "2", "not a boolean"),
    ("listen", "fleet.sock", "neither an absolute socket path nor host:port"),
    ("listen", "host:99999", "neither an absolute socket path nor host:port"),
    ("listen", "::1:80", "bad host"),
    ("listen", "[nope]:80", "bad IPv6 address"),
    ("verbosity", "-1", "whole number"),
    ("verbosity", "lots", "whole number"),
    ("token_limit", "0", "from 1 to 65535"),
    ("token_limit", "65536", "from 1 to 65535"),
    ("token_limit", "-5", "from 1 to 65535"),
    ("token_limit", "ten", "from 1 to 65535"),
]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("option", "raw", "reason"), BAD_VALUES)
def test_bad_values_name_option_source_and_value(
    source: str, option: str, raw: str, reason: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        via(source, option, raw, tmp_path)
    error = caught.value
    label = source_label(source, option, str(tmp_path / "fleet.conf"))
    assert (error.option, error.source, error.value) == (option, label, raw)
    message = str(error)
    for part in (option, label, repr(raw), reason):
        assert part in message


def test_a_bad_file_value_is_an_error_even_when_a_later_source_overrides_it(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "# first\nagent_ttl=forever\n")
    with pytest.raises(ConfigError, match=rf"agent_ttl: .*'forever' from {path}:2"):
        load_config(["--config", path, "--agent-ttl", "5s"], {"FLEET_AGENT_TTL": "5s"})


@pytest.mark.parametrize(
    ("text", "option", "value", "reason"),
    [
        ("nonsense_key=1\n", "nonsense_key", "1", "unknown option"),
        ("enable_grpc=false\n", "enable_grpc", "false", "pyfleet does not support"),
        ("[Service]\n", "config", "[Service]", "sections are not supported"),
        ("agent_ttl\n", "config", "agent_ttl", "expected a key=value line"),
        ("=5s\n", "config", "=5s", "expected a key=value line"),
    ],
)
def test_file_syntax_errors(
    text: str, option: str, value: str, reason: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "verbosity=1\n" + text)
    with pytest.raises(ConfigError) as caught:
        load_config(["--config", path], {})
    assert (caught.value.option, caught.value.source, caught.value.value) == (
        option,
        f"{path}:2",
        value,
    )
    assert reason in str(caught.value)


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError, match="no such file") as caught:
        load_config(["--config", missing], {})
    assert (caught.value.option, caught.value.source, caught.value.value) == (
        "config",
        "flag --config",
        missing,
    )


def test_an_unreadable_default_file_is_an_error(no_default_file: Path) -> None:
    no_default_file.mkdir()  # exists, but cannot be read as a file
    with pytest.raises(ConfigError, match="cannot read it") as caught:
        load_config([], {})
    assert caught.value.source == "the default config path"


def test_a_config_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "fleet.conf"
    path.write_bytes(b"public_ip=\xff\n")
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(["--config", str(path)], {})


def test_an_unknown_flag_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown flag") as caught:
        load_config(["--etcd-server=http://a:2379"], {})
    assert (caught.value.option, caught.value.value) == (
        "--etcd-server",
        "--etcd-server=http://a:2379",
    )


def test_a_flag_without_its_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="expected one argument") as caught:
        load_config(["--agent-ttl"], {})
    assert caught.value.source == "the command line"


def test_a_positional_argument_points_at_fleetctl() -> None:
    with pytest.raises(ConfigError, match="Did you mean to invoke fleetctl instead") as caught:
        load_config(["list-units"], {})
    assert caught.value.value == "list-units"


@pytest.mark.parametrize(
    ("argv", "environ", "source"),
    [
        (["--listen", "0.0.0.0:49153"], {}, "flag --listen"),
        ([], {"FLEET_LISTEN": "/run/a.sock,:49153"}, "environment variable FLEET_LISTEN"),
    ],
)
def test_a_tcp_listener_needs_an_api_token(
    argv: list[str], environ: dict[str, str], source: str, token_file: str
) -> None:
    with pytest.raises(ConfigError, match="needs api_token_file or api_client_cafile") as caught:
        load_config(argv, environ)
    assert (caught.value.option, caught.value.source) == ("listen", source)
    config = load_config([*argv, "--api-token-file", token_file], environ)
    assert any(not address.startswith("/") for address in config.listen)


TCP = ["--listen", "127.0.0.1:49153"]
TLS = ["--api-certfile=/etc/fleet/api.pem", "--api-keyfile=/etc/fleet/api-key.pem"]


def test_a_client_ca_lets_a_tcp_listener_go_without_a_token() -> None:
    config = load_config([*TCP, *TLS, "--api-client-cafile=/etc/fleet/ca.pem"], {})
    assert (config.api_certfile, config.api_keyfile, config.api_client_cafile) == (
        "/etc/fleet/api.pem",
        "/etc/fleet/api-key.pem",
        "/etc/fleet/ca.pem",
    )
    assert config.api_token_file == ""
    with pytest.raises(ConfigError, match="needs api_token_file or api_client_cafile"):
        load_config([*TCP, *TLS], {})  # TLS alone only encrypts: who may come in?


@pytest.mark.parametrize(
    ("argv", "option", "problem"),
    [
        (["--api-certfile=/a.pem"], "api_certfile", "needs api_keyfile too"),
        (["--api-keyfile=/a.pem"], "api_keyfile", "needs api_certfile too"),
        (["--api-client-cafile=/ca.pem"], "api_client_cafile", "needs api_certfile and"),
        (["--api-certfile=a.pem", "--api-keyfile=/k"], "api_certfile", "absolute path"),
    ],
)
def test_tls_options_come_as_a_whole(argv: list[str], option: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        load_config(argv, {})
    assert caught.value.option == option


def test_tls_options_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "api_certfile=/etc/fleet/api.pem\napi_client_cafile=/etc/fleet/ca.pem\n")
    config = load_config(["--config", path, *TCP], {"FLEET_API_KEYFILE": "/etc/fleet/api-key.pem"})
    assert config.api_keyfile == "/etc/fleet/api-key.pem"
    assert config.api_client_cafile == "/etc/fleet/ca.pem"


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640, 0o604, 0o660, 0o602], ids=oct)
def test_a_token_file_others_can_reach_is_refused(token_file: str, mode: int) -> None:
    """OpenSSH's rule for a private key: no permission at all for group or others."""
    Path(token_file).chmod(mode)
    with pytest.raises(ConfigError, match=f"permissions {mode:04o} are too open") as caught:
        load_config([*TCP, f"--api-token-file={token_file}"], {})
    assert (caught.value.option, caught.value.source) == ("api_token_file", "flag --api-token-file")


@pytest.mark.parametrize("mode", [0o600, 0o400], ids=oct)
def test_a_token_file_only_its_owner_reaches_is_accepted(token_file: str, mode: int) -> None:
    Path(token_file).chmod(mode)
    assert load_config(TCP, {"FLEET_API_TOKEN_FILE": token_file}).api_token_file == token_file


def test_a_token_file_reached_through_a_symlink_is_refused(token_file: str, tmp_path: Path) -> None:
    link = tmp_path / "token-link"
    link.symlink_to(token_file)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        load_config([*TCP, f"--api-token-file={link}"], {})


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda path: None, "no such file"),
        (lambda path: path.write_text(" \n"), "is empty"),
        (lambda path: path.mkdir(), "is not a regular file"),
        (lambda path: path.write_bytes(b"\xff\xfe"), "is not UTF-8 text"),
        (lambda path: path.write_text("x" * 5000), "is larger than 4096 bytes"),
    ],
    ids=["missing", "empty", "directory", "not-utf8", "too-large"],
)
def test_a_bad_token_file_is_a_config_error_naming_it(
    tmp_path: Path, make: Any, problem: str
) -> None:
    path = tmp_path / "token"
    make(path)
    if path.is_file():
        path.chmod(0o600)
    with pytest.raises(ConfigError, match=problem) as caught:
        load_config(TCP, {"FLEET_API_TOKEN_FILE": str(path)})
    assert caught.value.source == "environment variable FLEET_API_TOKEN_FILE"
    assert caught.value.value == str(path)


def test_a_token_file_owned_by_another_user_is_refused(
    token_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() == 0:
        os.chown(token_file, 4242, -1)  # root's own files are always accepted
    else:
        monkeypatch.setattr(os, "geteuid", lambda: 4242)  # as if fleetd ran as another user
    with pytest.raises(ConfigError, match=r"is owned by uid \d+, neither fleetd's user nor root"):
        load_config([*TCP, f"--api-token-file={token_file}"], {})


def test_a_fifo_as_token_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config([*TCP, f"--api-token-file={fifo}"], {})


def test_a_token_file_is_not_read_without_a_tcp_listener(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent")
    assert load_config([f"--api-token-file={missing}"], {}).api_token_file == missing


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_the_node_to_node_endpoint_needs_the_cluster_secret(token_file: str) -> None:
    with pytest.raises(ConfigError, match="needs cluster_secret_file") as caught:
        load_config(["--peer-listen", "0.0.0.0:49154"], {})
    assert (caught.value.option, caught.value.source) == ("peer_listen", "flag --peer-listen")
    environ = {"FLEET_PEER_LISTEN": ":49154", "FLEET_CLUSTER_SECRET_FILE": token_file}
    config = load_config([], environ)
    assert (config.peer_listen, config.cluster_secret_file) == (":49154", token_file)
    assert load_config([], {}).peer_listen == ""


@pytest.mark.parametrize("address", ["/run/peer.sock", "49154", "host:port", "a b:1"])
def test_the_node_to_node_endpoint_is_tcp(address: str, token_file: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(["--peer-listen", address, "--cluster-secret-file", token_file], {})
    assert caught.value.option == "peer_listen"


def test_a_cluster_secret_others_can_read_is_refused(token_file: str) -> None:
    Path(token_file).chmod(0o644)
    with pytest.raises(ConfigError, match="permissions 0644 are too open") as caught:
        load_config(["--cluster-secret-file", token_file], {})
    assert (caught.value.option, caught.value.source) == (
        "cluster_secret_file",
        "flag --cluster-secret-file",
    )
