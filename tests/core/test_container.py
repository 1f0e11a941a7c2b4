"""`[X-Container]`: what a unit's container section asks for, its refusals, and the drop-in."""

from __future__ import annotations

import shlex

import pytest

from fleetd.core.container import (
    STAGE1S,
    ContainerError,
    ContainerSpec,
    ContainerVolume,
    PortMapping,
    container_dropin,
    fleet_pod_argv,
    parse_container,
    spoken_choices,
    systemd_quote,
)
from fleetd.core.unitfile import parse_unit

PROGRAM = "/opt/pyfleet/bin/fleet-pod"


def section(lines: str) -> ContainerSpec | None:
    return parse_container(parse_unit("[Unit]\nDescription=c\n\n[X-Container]\n" + lines))


def test_a_unit_without_the_section_runs_no_container() -> None:
    assert parse_container(parse_unit("[Service]\nExecStart=/bin/true\n")) is None


def test_every_key() -> None:
    spec = section(
        "Image=https://images.example.com/hello-1.0.aci\n"
        'Exec=/bin/sh -c "echo hello; exec sleep 1000"\n'
        'Environment=GREETING=hello "NAME=the world"\n'
        "Environment=EMPTY=\n"
        "Volume=data,kind=host,source=/srv/data,target=/data,readOnly=true\n"
        "Volume=scratch,kind=empty\n"
        "Memory=64M\nCPU=500m\nNet=host\nStage1=fly\n"
    )
    assert spec == ContainerSpec(
        image="https://images.example.com/hello-1.0.aci",
        exec=("/bin/sh", "-c", "echo hello; exec sleep 1000"),
        environment=(("GREETING", "hello"), ("NAME", "the world"), ("EMPTY", "")),
        volumes=(
            ContainerVolume("data", "data,kind=host,source=/srv/data,readOnly=true", "/data"),
            ContainerVolume("scratch", "scratch,kind=empty", None),
        ),
        memory="64M",
        cpu="500m",
        net="host",
        stage1="fly",
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("Exec=/bin/true\n", r"needs Image="),
        ("Image=a b\n", r"Image=a b: an image reference has no spaces"),
        ("Image=x\nImage=y\n", r"Image= is given 2 times"),
        ("Image=x\nImag=y\n", r"unknown key Imag="),
        ("Image=x\nExec=\n", r"Exec= is empty"),
        ('Image=x\nExec=/bin/sh -c "unclosed\n', r"Exec=.*No closing quotation"),
        ("Image=x\nEnvironment=1BAD=x\n", r"'1BAD=x' is not a NAME=value"),
        ("Image=x\nEnvironment=NOEQUALS\n", r"'NOEQUALS' is not a NAME=value"),
        ("Image=x\nVolume=Data,kind=host,source=/d\n", r"'Data' is not a volume name"),
        ("Image=x\nVolume=d,kind=nfs,source=/d\n", r"kind must be host or empty"),
        ("Image=x\nVolume=d,kind=host\n", r"a host volume needs source="),
        ("Image=x\nVolume=d,kind=host,source=rel\n", r"source must be an absolute path"),
        ("Image=x\nVolume=d,kind=empty,target=rel\n", r"target must be an absolute path"),
        ("Image=x\nVolume=d,kind=empty,colour=red\n", r"unknown part 'colour' for kind=empty"),
        ("Image=x\nVolume=d,kind=empty,source=/x\n", r"unknown part 'source' for kind=empty"),
        ("Image=x\nVolume=d,kind=host,source=/x,mode=0700\n", r"'mode' for kind=host"),
        ("Image=x\nVolume=d,kind=empty,mode=rwx\n", r"mode must be octal"),
        ("Image=x\nVolume=d,kind=empty,uid=root\n", r"uid must be a number"),
        ("Image=x\nVolume=d,kind=empty,target=/\n", r"target cannot be /"),
        ("Image=x\nVolume=d,kind\n", r"unknown part 'kind'"),
        ("Image=x\nVolume=d,kind=empty,kind=host\n", r"kind given twice"),
        ("Image=x\nVolume=d,kind=empty,readOnly=maybe\n", r"readOnly must be true or false"),
        ("Image=x\nVolume=d,kind=empty\nVolume=d,kind=empty\n", r"a volume name is used twice"),
        ("Image=x\nMemory=lots\n", r"Memory=lots: not a size"),
        ("Image=x\nMemory=0\n", r"Memory=0: not a size"),
        ("Image=x\nMemory=32M\n", r"Memory=32M: below the minimum of 64M"),
        ("Image=x\nCPU=fast\n", r"CPU=fast: not a CPU amount"),
        ("Image=x\nNet=bridge\n", r"Net=bridge: must be one of default, host, none"),
        ("Image=x\nStage1=kvm\n", r"Stage1=kvm: must be one of nspawn, fly"),
        ("Image=x\nPort=8080\n", r"Port= '8080': expected NODE-PORT:POD-PORT"),
        ("Image=x\nPort=8080:80/sctp\n", r"protocol 'sctp' is not tcp or udp"),
        ("Image=x\nPort=0:80\n", r"node port '0' is not a port"),
        ("Image=x\nPort=8080:99999\n", r"pod port '99999' is not a port"),
        ("Image=x\nPort=8080:80\nPort=8080:81/tcp\n", r"a node port is published twice"),
        ("Image=x\nNet=host\nPort=8080:80\n", r"Port= needs Net=default"),
    ],
)
def test_refusals_name_the_key(lines: str, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        section(lines)


@pytest.mark.parametrize("word", ["plain", "two words", 'a"quote', "back\\slash", "$HOME", "$(x)"])
def test_quoting_keeps_every_word_literal(word: str) -> None:
    quoted = systemd_quote(word)
    # systemd unescapes $$ first; what is left is a double-quoted C-style string.
    assert shlex.split(quoted.replace("$$", "$")) == [word]


def test_specifiers_are_left_for_systemd() -> None:
    assert systemd_quote("/srv/images/%i.aci") == '"/srv/images/%i.aci"'
    assert systemd_quote("100%%") == '"100%%"'


def test_the_argv_and_the_dropin() -> None:
    spec = section(
        "Image=example.com/hello:1.0\nExec=/bin/echo hi there\nEnvironment=A=1\n"
        "Volume=data,kind=host,source=/srv/data,target=/data\nMemory=64Mi\nCPU=250m\n"
    )
    assert spec is not None
    assert fleet_pod_argv(spec, PROGRAM) == [
        PROGRAM,
        "run",
        "--memory",
        "64Mi",
        "--cpu",
        "250m",
        "--set-env",
        "A=1",
        "--volume",
        "data,kind=host,source=/srv/data",
        "--mount",
        "volume=data,target=/data",
        "example.com/hello:1.0",
        "--exec",
        "/bin/echo",
        "--",
        "hi",
        "there",
    ]
    dropin = parse_unit(container_dropin(spec, PROGRAM))
    assert dropin.values("Service", "ExecStart")[0] == ""  # resets the unit's own
    assert shlex.split(dropin.values("Service", "ExecStart")[1]) == fleet_pod_argv(spec, PROGRAM)
    assert dropin.values("Service", "MemoryMax") == [str(64 * 2**20)]
    assert dropin.values("Service", "CPUQuota") == ["25%"]
    assert dropin.values("Service", "KillMode") == ["mixed"]
    assert dropin.values("Service", "ExecStopPost") == [f'-"{PROGRAM}" "gc" "--mark-only"']


def test_choices_are_spoken_as_a_message_says_them() -> None:
    assert spoken_choices(STAGE1S) == "nspawn or fly"
    assert spoken_choices(("a", "b", "c")) == "a, b or c"
    assert spoken_choices(("a",)) == "a"


def test_ports_become_fleet_pod_flags() -> None:
    spec = section("Image=x\nPort=8080:80\nPort=5353:53/udp\nPort=8080:80/udp\n")
    assert spec is not None
    assert spec.ports == (
        PortMapping(8080, 80, "tcp"),
        PortMapping(5353, 53, "udp"),
        PortMapping(8080, 80, "udp"),
    )
    argv = fleet_pod_argv(spec, PROGRAM)
    assert argv[argv.index("--port") : argv.index("--port") + 2] == ["--port", "8080:80/tcp"]
    assert "5353:53/udp" in argv
