"""Resolving arguments to units: local files, templates, the registry, --replace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleetctl import units
from fleetctl.models import Unit
from fleetctl.units import Resolution, ResolutionError, local_path, resolve_units
from fleetd.core.states import Command
from fleetd.core.unitfile import UnitFile, parse_unit

HELLO = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/true\n"
CHANGED = "[Unit]\nDescription=Hello again\n\n[Service]\nExecStart=/bin/true\n"
TEMPLATE = "[Unit]\nDescription=Worker %i\n\n[Service]\nExecStart=/bin/work %i\n"


class Registry:
    """The registry as `resolve_units` sees it; records the names it was asked for."""

    def __init__(self) -> None:
        self.stored: dict[str, Unit] = {}
        self.asked: list[str] = []

    def put(self, name: str, text: str, desired: str = "inactive") -> None:
        self.stored[name] = Unit(name, parse_unit(text).options, desired_state=desired)

    def unit(self, name: str) -> Unit | None:
        self.asked.append(name)
        return self.stored.get(name)


@pytest.fixture
def registry() -> Registry:
    return Registry()


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def created(resolution: Resolution) -> str | None:
    return resolution.unit_file.serialize() if resolution.unit_file else None


@pytest.mark.parametrize(
    ("arg", "path"),
    [
        ("hello", "hello.service"),
        ("dir/hello", "dir/hello.service"),
        ("hello.service", "hello.service"),
        ("x.target", "x.target"),
        ("foo.1", "foo.1"),
    ],
)
def test_local_path(arg: str, path: str) -> None:
    assert local_path(arg) == path


def test_a_new_unit_comes_from_its_local_file(workdir: Path, registry: Registry) -> None:
    write(workdir, "hello.service", HELLO)
    [resolution] = resolve_units(registry, ["hello"], Command.SUBMIT, replace=False)
    assert resolution.name == "hello.service"
    assert created(resolution) == UnitFile(parse_unit(HELLO).options).serialize()
    assert not resolution.replacing


def test_a_path_names_the_unit_by_its_basename(workdir: Path, registry: Registry) -> None:
    (workdir / "units").mkdir()
    write(workdir / "units", "web.socket", "[Socket]\nListenStream=80\n")
    [resolution] = resolve_units(registry, ["units/web.socket"], Command.SUBMIT, replace=False)
    assert resolution.name == "web.socket"
    assert resolution.unit_file is not None


def test_repeated_names_resolve_once(workdir: Path, registry: Registry) -> None:
    write(workdir, "hello.service", HELLO)
    resolutions = resolve_units(registry, ["hello", "hello.service"], Command.SUBMIT, False)
    assert [r.name for r in resolutions] == ["hello.service"]


def test_nothing_local_and_not_in_the_registry(workdir: Path, registry: Registry) -> None:
    with pytest.raises(
        ResolutionError, match=r"^unable to find Unit\(nope.service\) in Registry or on filesystem$"
    ):
        resolve_units(registry, ["nope"], Command.START, replace=False)


def test_an_instance_comes_from_the_registrys_template_first(
    workdir: Path, registry: Registry
) -> None:
    registry.put("worker@.service", TEMPLATE)
    write(workdir, "worker@.service", HELLO)  # the registry's template wins
    [resolution] = resolve_units(registry, ["worker@1"], Command.START, replace=False)
    assert resolution.name == "worker@1.service"
    assert created(resolution) == UnitFile(parse_unit(TEMPLATE).options).serialize()
    assert registry.asked == ["worker@1.service", "worker@.service"]


def test_an_instance_comes_from_the_template_beside_the_argument(
    workdir: Path, registry: Registry
) -> None:
    (workdir / "units").mkdir()
    write(workdir / "units", "worker@.service", TEMPLATE)
    [resolution] = resolve_units(registry, ["units/worker@2.service"], Command.LOAD, False)
    assert resolution.name == "worker@2.service"
    assert created(resolution) == UnitFile(parse_unit(TEMPLATE).options).serialize()


def test_a_local_template_is_read_once_for_all_its_instances(
    workdir: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(workdir, "worker@.service", TEMPLATE)
    registry.put("worker@2.service", CHANGED)
    reads: list[str] = []
    read = units.read_unit_file

    def counted(path: str) -> UnitFile:
        reads.append(path)
        return read(path)

    monkeypatch.setattr(units, "read_unit_file", counted)
    resolutions = resolve_units(
        registry, ["worker@1", "worker@2", "worker@3"], Command.START, replace=False
    )
    assert [created(r) is not None for r in resolutions] == [True, False, True]
    assert resolutions[1].warnings  # the registry's worker@2 differs from the template
    assert reads == ["worker@.service"]


def test_an_instance_without_any_template(workdir: Path, registry: Registry) -> None:
    with pytest.raises(ResolutionError, match=r"unable to find template Unit\(worker@.service\)"):
        resolve_units(registry, ["worker@3"], Command.START, replace=False)


def test_an_existing_unit_is_kept(workdir: Path, registry: Registry) -> None:
    registry.put("hello.service", HELLO)
    [resolution] = resolve_units(registry, ["hello"], Command.START, replace=False)
    assert resolution == Resolution("hello.service")


def test_an_identical_local_file_is_kept_silently(workdir: Path, registry: Registry) -> None:
    registry.put("hello.service", HELLO)
    write(workdir, "hello.service", HELLO)
    [resolution] = resolve_units(registry, ["hello"], Command.START, replace=False)
    assert resolution == Resolution("hello.service")


def test_a_changed_local_file_is_refused_without_replace(workdir: Path, registry: Registry) -> None:
    registry.put("hello.service", HELLO)
    write(workdir, "hello.service", CHANGED)
    [resolution] = resolve_units(registry, ["hello"], Command.START, replace=False)
    assert resolution.unit_file is None
    assert resolution.warnings == (
        "WARNING: Unit hello.service in registry differs from local unit file hello.service. "
        "Add --replace to override.",
    )


def test_a_changed_local_template_is_refused_without_replace(
    workdir: Path, registry: Registry
) -> None:
    registry.put("worker@1.service", TEMPLATE)
    write(workdir, "worker@.service", CHANGED)
    [resolution] = resolve_units(registry, ["worker@1"], Command.START, replace=False)
    assert resolution.unit_file is None
    assert resolution.warnings == (
        "WARNING: Unit worker@1.service in registry differs from local template unit file "
        "worker@.service. Add --replace to override.",
    )


@pytest.mark.parametrize(
    ("command", "desired", "allowed"),
    [
        (Command.SUBMIT, "inactive", True),
        (Command.SUBMIT, "loaded", False),
        (Command.SUBMIT, "launched", False),
        (Command.LOAD, "inactive", True),
        (Command.LOAD, "loaded", True),
        (Command.LOAD, "launched", False),
        (Command.START, "inactive", True),
        (Command.START, "loaded", True),
        (Command.START, "launched", True),
    ],
)
def test_replace_depends_on_the_command_and_the_desired_state(
    command: Command, desired: str, allowed: bool, workdir: Path, registry: Registry
) -> None:
    registry.put("hello.service", HELLO, desired=desired)
    write(workdir, "hello.service", CHANGED)
    [resolution] = resolve_units(registry, ["hello"], command, replace=True)
    if allowed:
        assert resolution.replacing
        assert created(resolution) == UnitFile(parse_unit(CHANGED).options).serialize()
        assert resolution.warnings == ()
    else:
        assert resolution.unit_file is None
        assert resolution.warnings == (
            f"Warning: can not replace Unit(hello.service) in state '{desired}', "
            "use the appropriate command",
        )


def test_replace_with_an_identical_file_says_so(workdir: Path, registry: Registry) -> None:
    registry.put("hello.service", HELLO)
    write(workdir, "hello.service", HELLO)
    [resolution] = resolve_units(registry, ["hello"], Command.SUBMIT, replace=True)
    assert resolution.unit_file is None
    assert resolution.info == ("Found same Unit(hello.service) in Registry, nothing to do",)


def test_replace_without_a_local_file_is_an_error(workdir: Path, registry: Registry) -> None:
    registry.put("hello.service", HELLO)
    with pytest.raises(ResolutionError, match=r"cannot replace Unit\(hello.service\)"):
        resolve_units(registry, ["hello"], Command.START, replace=True)


# -- validation before any request ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.service",
            "[Service\nExecStart=/bin/true\n",
            "failed getting Unit(bad.service) from file: malformed unit file: line 1: "
            "unable to find end of section",
        ),
        ("empty.service", "# nothing\n", "the unit file has no options"),
        (
            "both.service",
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineID=abc\nConflicts=x*\n",
            "MachineID cannot be used with Conflicts",  # fleet's ValidateOptions, no prefix
        ),
        ("tmpl@.service", TEMPLATE, 'cannot activate template "tmpl@.service"'),
    ],
)
def test_invalid_local_files_fail_before_any_request(
    name: str, text: str, message: str, workdir: Path, registry: Registry
) -> None:
    write(workdir, "good.service", HELLO)
    write(workdir, name, text)
    with pytest.raises(ResolutionError) as caught:
        resolve_units(registry, ["good", name], Command.START, replace=False)
    assert str(caught.value) == message
    assert registry.asked == []


def test_an_invalid_name_fails_before_any_request(workdir: Path, registry: Registry) -> None:
    write(workdir, "a b.service", HELLO)
    with pytest.raises(
        ResolutionError,
        match=re.escape("invalid unit name \"a b.service\": invalid character ' ' in unit name"),
    ):
        resolve_units(registry, ["a b"], Command.SUBMIT, replace=False)
    assert registry.asked == []


def test_a_name_without_a_file_is_looked_for_first_as_in_fleet(
    workdir: Path, registry: Registry
) -> None:
    """fleet looks for the unit before it checks the name: a quoted glob is a unit not found."""
    with pytest.raises(ResolutionError) as caught:
        resolve_units(registry, ["foo*"], Command.START, replace=False)
    assert str(caught.value) == ("unable to find Unit(foo*.service) in Registry or on filesystem")


def test_a_template_may_be_submitted(workdir: Path, registry: Registry) -> None:
    write(workdir, "tmpl@.service", TEMPLATE)
    [resolution] = resolve_units(registry, ["tmpl@.service"], Command.SUBMIT, replace=False)
    assert resolution.unit_file is not None


def test_an_instance_from_an_invalid_template_is_refused(workdir: Path, registry: Registry) -> None:
    registry.put(
        "w@.service", "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=1\nMachineOf=b.service\n"
    )
    message = r"^Global cannot be used with Peers$"
    with pytest.raises(ResolutionError, match=message):
        resolve_units(registry, ["w@1"], Command.START, replace=False)


def test_an_unreadable_file(workdir: Path, registry: Registry) -> None:
    (workdir / "latin.service").write_bytes(b"[Unit]\nDescription=caf\xe9\n")
    with pytest.raises(
        ResolutionError,
        match=r"failed getting Unit\(latin.service\) from file: not UTF-8",
    ):
        resolve_units(registry, ["latin"], Command.SUBMIT, replace=False)
