"""fleetd's configuration: fleet's option names, read from four layered sources.

Sources, each overriding the one before: built-in defaults < the config file (`--config PATH`,
else `/etc/fleet/fleet.conf` when it exists) < `FLEET_<NAME>` environment variables < flags
(`--etcd-servers`, ...). Every source is validated on its own, so a bad value is an error even
when a later source overrides it.

Invariants:
* `load_config` reads the config file, the API token file when a TCP listener needs it, and the
  cluster secret file when one is named, and nothing else: no logging, no clock, no network.
* `peer_listen` (the node-to-node endpoint, TCP) needs `cluster_secret_file`.
* The token file (and the cluster secret file) is held to OpenSSH's rule for private keys: a
  regular file, not a symbolic link, owned by fleetd's user or root, with no permission for
  group or others (0600 or 0400), and non-empty; else a `ConfigError` saying which rule it breaks.
* A TCP listener needs a way to authenticate its clients: `api_token_file`, or TLS
  (`api_certfile` with `api_keyfile`) with `api_client_cafile`; the files themselves are read
  when the API starts (`fleetd.api.tls`).
* Every bad value raises `ConfigError`, whose message names the option, the source (file and
  line, variable or flag) and the offending value.
* The result is a frozen `Config`; derived forms are normalised (the key prefix ends with `/`,
  metadata is sorted, durations are float seconds).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NoReturn
from urllib.parse import urlsplit

from fleetd.core.model import AGENT_TTL
from fleetd.registry.keys import DEFAULT_PREFIX, as_prefix

DEFAULT_CONFIG_PATH = "/etc/fleet/fleet.conf"
MAX_TOKEN_FILE_BYTES = 4096


class ConfigError(ValueError):
    """A bad configuration value, with the option, source and value that caused it."""

    def __init__(self, option: str, source: str, value: str, reason: str) -> None:
        super().__init__(f"{option}: {reason} (got {value!r} from {source})")
        self.option, self.source, self.value, self.reason = option, source, value, reason


@dataclass(frozen=True)
class Config:
    """fleetd's settings; durations are seconds. Field names are fleet's option names."""

    etcd_servers: tuple[str, ...] = ("http://127.0.0.1:2379",)
    etcd_key_prefix: str = DEFAULT_PREFIX
    etcd_request_timeout: float = 5.0
    etcd_username: str = ""
    etcd_password: str = ""
    etcd_cafile: str = ""
    etcd_certfile: str = ""
    etcd_keyfile: str = ""
    public_ip: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    agent_ttl: float = AGENT_TTL
    engine_reconcile_interval: float = 2.0
    disable_engine: bool = False
    disable_agent: bool = False
    listen: tuple[str, ...] = ("/var/run/fleet.sock",)
    api_token_file: str = ""
    peer_listen: str = ""  # host:port of the node-to-node endpoint ("" serves none)
    cluster_secret_file: str = ""  # the cluster credential, the same file on every machine
    api_certfile: str = ""  # TLS on the TCP listeners: the server's certificate (PEM) ...
    api_keyfile: str = ""  # ... and its private key (PEM)
    api_client_cafile: str = ""  # client certificates signed by this CA (PEM) are let in
    token_limit: int = 100  # the API's page size
    machine_id_file: str = "/etc/machine-id"
    units_directory: str = "/run/fleet/units/"  # where the agent writes the unit files it runs
    verbosity: int = 0
    config_file: str = ""  # the file actually read, "" when none was
    show_version: bool = False  # `--version` or `fleetd version`: print it and exit
    show_help: bool = False  # `--help`: print `help_text()` and exit


# fleet options that pyfleet does not implement: named in their own error, not as "unknown".
_UNSUPPORTED = frozenset(
    {"systemd_user", "enable_grpc", "disable_watches"} | {"verify_units", "authorized_keys_file"}
)

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = r"(?:\d+\.?\d*|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})(ns|us|ms|s|m|h)")
_DURATION = re.compile(rf"[-+]?(?:{_NUMBER}(?:ns|us|ms|s|m|h))+")
_PLAIN_SECONDS = re.compile(rf"[-+]?{_NUMBER}")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_TRUE, _FALSE = {"1", "t", "true", "yes", "y", "on"}, {"0", "f", "false", "no", "n", "off"}


def parse_duration(text: str) -> float:
    """Seconds from a Go duration (`10s`, `1m30s`, `500ms`, `-2h`) or a plain number of seconds."""
    text = text.strip().replace("µ", "u").replace("μ", "u")  # Go accepts both micro signs
    if _PLAIN_SECONDS.fullmatch(text):
        return float(text)
    if not _DURATION.fullmatch(text):
        raise ValueError("not a duration like 10s, 1m30s, 500ms or a number of seconds")
    total = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    return -total if text.startswith("-") else total


def _positive_seconds(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise ValueError("not a boolean (true/false, 1/0, yes/no)")


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _verbosity(text: str) -> int:
    if not _is_number(text.strip()):
        raise ValueError("not a whole number >= 0")
    return int(text)


def _token_limit(text: str) -> int:
    if not _is_number(text.strip()) or not 1 <= int(text) <= 0xFFFF:
        raise ValueError("not a whole number from 1 to 65535 (a page token holds it in 16 bits)")
    return int(text)


def _etcd_servers(text: str) -> tuple[str, ...]:
    # fleet's rule: split on commas, trim `[`, `]`, quotes and spaces from each item.
    servers = tuple(s for item in text.split(",") if (s := item.strip(" \t[]\"'")))
    if not servers:
        raise ValueError("needs at least one etcd URL")
    for server in servers:
        url = urlsplit(server)
        _ = url.port  # raises ValueError on a port that is not a number
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{server!r} is not an http:// or https:// URL")
    return servers


def _key_prefix(text: str) -> str:
    prefix = text.strip()
    if not prefix.startswith("/"):
        raise ValueError("must start with '/'")
    return as_prefix(prefix)


def _ip_address(text: str) -> str:
    text = text.strip()
    if text:
        ipaddress.ip_address(text)  # its ValueError names the bad address
    return text


def _metadata(text: str) -> tuple[tuple[str, str], ...]:
    pairs: dict[str, str] = {}  # the last duplicate wins, as in fleet
    for item in text.split(","):
        if not item.strip():
            continue  # tolerate `a=b,` and empty values
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item.strip()!r} is not a key=value pair")
        pairs[key.strip()] = value.strip()
    return tuple(sorted(pairs.items()))


def is_tcp_address(address: str) -> bool:
    """Whether a `listen` address is TCP (`host:port`); else it is a unix socket's absolute path."""
    return not address.startswith("/")


def _listen_address(item: str) -> str:
    if not is_tcp_address(item):
        return item  # a unix socket path
    host, sep, port = item.rpartition(":")
    if not sep or not _is_number(port) or int(port) > 65535:
        raise ValueError(f"{item!r} is neither an absolute socket path nor host:port")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{item!r} has a bad IPv6 address") from None
    elif host and not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{item!r} has a bad host (IPv6 addresses go in brackets)")
    return item


def _listen(text: str) -> tuple[str, ...]:
    items = (_listen_address(i.strip()) for i in text.split(",") if i.strip())
    return tuple(dict.fromkeys(items))  # drop repeats, keep order


def _peer_listen(text: str) -> str:
    item = text.strip()
    if not item:
        return ""
    if item.startswith("/"):
        raise ValueError("must be host:port (the node-to-node endpoint is TCP only)")
    return _listen_address(item)


def _absolute_path(text: str) -> str:
    path = text.strip()
    if not path.startswith("/"):
        raise ValueError("must be an absolute path")
    return path


def _text(text: str) -> str:
    return text.strip()


_PARSERS: dict[str, Callable[[str], Any]] = {
    "etcd_servers": _etcd_servers,
    "etcd_key_prefix": _key_prefix,
    "etcd_request_timeout": _positive_seconds,
    "public_ip": _ip_address,
    "metadata": _metadata,
    "agent_ttl": _positive_seconds,
    "engine_reconcile_interval": _positive_seconds,
    "disable_engine": _boolean,
    "disable_agent": _boolean,
    "listen": _listen,
    "token_limit": _token_limit,
    "verbosity": _verbosity,
    "units_directory": _absolute_path,
    "peer_listen": _peer_listen,
    "api_certfile": _absolute_path,
    "api_keyfile": _absolute_path,
    "api_client_cafile": _absolute_path,
}
OPTIONS: tuple[str, ...] = tuple(
    f.name for f in fields(Config) if f.name not in ("config_file", "show_version", "show_help")
)
_BOOLEANS = frozenset({"disable_engine", "disable_agent"})
_TLS_FILES = ("api_certfile", "api_keyfile", "api_client_cafile")

_Layer = dict[str, tuple[Any, str]]  # option -> (parsed value, source)


def _parse(option: str, raw: str, source: str) -> tuple[Any, str]:
    try:
        return _PARSERS.get(option, _text)(raw), source
    except ValueError as error:
        raise ConfigError(option, source, raw, str(error)) from None


class _Parser(argparse.ArgumentParser):
    """argparse that raises `ConfigError` instead of printing and exiting."""

    def __init__(self, argv: Sequence[str]) -> None:
        epilog = (
            "Each option can also be set as name=value in the config file or as FLEET_NAME in "
            "the environment (e.g. agent_ttl, FLEET_AGENT_TTL). Flags override the environment, "
            "which overrides the file."
        )
        super().__init__(prog="fleetd", add_help=False, allow_abbrev=False, epilog=epilog)
        self.argv = argv

    def error(self, message: str) -> NoReturn:
        raise ConfigError("command line", "the command line", " ".join(self.argv), message)


def _build_parser(argv: Sequence[str] = ()) -> _Parser:
    parser = _Parser(argv)
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("--version", "-version", action="store_true", help="print the version")
    parser.add_argument(
        "--config", "-config", metavar="PATH", help=f"default {DEFAULT_CONFIG_PATH}"
    )
    for name in OPTIONS:
        flag, shown = "--" + name.replace("_", "-"), f"default: {_describe_default(name)}"
        if name in _BOOLEANS:
            parser.add_argument(
                flag, dest=name, nargs="?", const="true", metavar="BOOL", help=shown
            )
        elif name == "listen":
            parser.add_argument(flag, dest=name, action="append", help=f"repeatable; {shown}")
        else:
            parser.add_argument(flag, dest=name, help=shown)
    return parser


def _describe_default(name: str) -> str:
    value = getattr(Config(), name)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        value = ",".join("=".join(v) if isinstance(v, tuple) else v for v in value)
    return str(value) if value != "" else "(none)"


def help_text() -> str:
    """The `--help` text; options also come from the file and `FLEET_<NAME>` variables."""
    return _build_parser().format_help()


def _file_layer(path: str, explicit: bool) -> _Layer | None:
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        if not explicit:
            return None
        raise ConfigError("config", "flag --config", path, "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        source = "flag --config" if explicit else "the default config path"
        raise ConfigError("config", source, path, f"cannot read it: {error}") from None
    layer: _Layer = {}
    for number, raw_line in enumerate(lines, start=1):
        source, line = f"{path}:{number}", raw_line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if line.startswith("["):
            raise ConfigError("config", source, line, "sections are not supported")
        if not sep or not key:
            raise ConfigError("config", source, line, "expected a key=value line")
        if key in _UNSUPPORTED:
            raise ConfigError(key, source, value, "a fleet option that pyfleet does not support")
        if key not in OPTIONS:
            raise ConfigError(key, source, value, "unknown option")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        layer[key] = _parse(key, value, source)
    return layer


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for name in OPTIONS:
        variable = "FLEET_" + name.upper()
        raw = environ.get(variable, "")
        if raw.strip():  # an empty variable counts as unset (`Environment=FLEET_X=` clears it)
            layer[name] = _parse(name, raw, f"environment variable {variable}")
    return layer


def _flag_layer(args: argparse.Namespace) -> _Layer:
    layer: _Layer = {}
    for name in OPTIONS:
        raw = getattr(args, name)
        source = "flag --" + name.replace("_", "-")
        if isinstance(raw, list):  # --listen, repeatable: check each occurrence on its own
            parsed = [_parse(name, occurrence, source)[0] for occurrence in raw]
            layer[name] = (tuple(dict.fromkeys(a for item in parsed for a in item)), source)
        elif raw is not None:
            layer[name] = _parse(name, raw, source)
    return layer


def _token_file_problem(path: str) -> str | None:
    """Why the token file at `path` must not be used (see the module docstring), or None."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: never a FIFO
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symbolic link; name the file itself"
        if error.errno == errno.ENOENT:
            return "no such file"
        return f"cannot read it: {error.strerror}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return "is not a regular file"
        if info.st_uid not in (os.geteuid(), 0):
            return f"is owned by uid {info.st_uid}, neither fleetd's user nor root"
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            return (
                f"permissions {mode:04o} are too open: group and others must have no access "
                "(chmod 600)"
            )
        data = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    except OSError as error:
        return f"cannot read it: {error.strerror}"
    finally:
        os.close(fd)
    if len(data) > MAX_TOKEN_FILE_BYTES:
        return f"is larger than {MAX_TOKEN_FILE_BYTES} bytes"
    try:
        token = data.decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    if not token.strip():
        return "is empty"
    return None


def check_api_token_file(path: str, source: str, option: str = "api_token_file") -> None:
    """Raise `ConfigError` unless `path` is a token file fleetd may use (the API token, or with
    `option="cluster_secret_file"` the cluster credential: the same rules)."""
    problem = _token_file_problem(path)
    if problem is not None:
        raise ConfigError(option, source, path, problem)


def _check_tls(merged: _Layer) -> None:
    """The TLS options come as a whole: a certificate with its key, a client CA only with both."""
    given = {name: merged[name] for name in _TLS_FILES if name in merged}
    for name, needs in (("api_certfile", "api_keyfile"), ("api_keyfile", "api_certfile")):
        if name in given and needs not in given:
            value, source = given[name]
            raise ConfigError(name, source, value, f"needs {needs} too (TLS needs both)")
    if "api_client_cafile" in given and "api_certfile" not in given:
        value, source = given["api_client_cafile"]
        reason = "needs api_certfile and api_keyfile (client certificates need TLS)"
        raise ConfigError("api_client_cafile", source, value, reason)


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Build the `Config` from `argv` (without the program name), `environ` and the config file."""
    parser = _build_parser(argv)
    args, extra = parser.parse_known_args(list(argv))
    for word in extra:
        if word.startswith("-"):
            raise ConfigError(word.split("=", 1)[0], "the command line", word, "unknown flag")
        if word != "version":
            reason = "takes no arguments. Did you mean to invoke fleetctl instead?"
            raise ConfigError("fleetd", "the command line", word, reason)
    if args.help or args.version or extra:
        return Config(show_help=args.help, show_version=args.version or bool(extra))
    path = DEFAULT_CONFIG_PATH if args.config is None else args.config
    file_layer = _file_layer(path, explicit=args.config is not None)
    merged: _Layer = {}
    for layer in (file_layer or {}, _env_layer(environ), _flag_layer(args)):
        merged.update(layer)
    _check_tls(merged)
    tcp = [a for a in merged.get("listen", ((), ""))[0] if is_tcp_address(a)]
    token_file, token_source = merged.get("api_token_file", ("", ""))
    if tcp and not token_file and "api_client_cafile" not in merged:
        reason = (
            "a TCP listener needs api_token_file or api_client_cafile (the API must not be "
            "open without a token or a client certificate)"
        )
        raise ConfigError("listen", merged["listen"][1], tcp[0], reason)
    if tcp and token_file:
        check_api_token_file(token_file, token_source)
    peer, peer_source = merged.get("peer_listen", ("", ""))
    secret_file, secret_source = merged.get("cluster_secret_file", ("", ""))
    if peer and not secret_file:
        reason = (
            "the node-to-node endpoint needs cluster_secret_file (it must not be open to anyone "
            "who can reach the port)"
        )
        raise ConfigError("peer_listen", peer_source, peer, reason)
    if secret_file:
        check_api_token_file(secret_file, secret_source, "cluster_secret_file")
    values = {name: value for name, (value, _source) in merged.items()}
    return Config(**values, config_file=path if file_layer is not None else "")
