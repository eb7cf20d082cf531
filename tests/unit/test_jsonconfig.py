"""The site programs read their JSON config files one way (lab.shared.jsonconfig)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.shared.jsonconfig import read_object, resolve_paths
from lab.sites.health.config import ConfigError, load_config
from lab.sites.introspect.server import load_server_config


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read: No such file or directory"),
    (b"\xff\xfe{}", "not UTF-8 text"),
    (b"{nope", "not JSON"),
    (b"[1, 2]", "the top level must be an object"),
])
def test_each_program_names_the_file_and_the_problem(tmp_path: Path, content: bytes | None,
                                                     message: str) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_bytes(content)
    for load, error in ((load_config, ConfigError), (load_server_config, ValueError),
                        (read_object, ValueError)):
        with pytest.raises(error) as err:
            load(path)
        assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_relative_paths_are_taken_from_the_files_folder(tmp_path: Path) -> None:
    raw = {"state_file": "state.json", "log": "/var/log/x", "port": 53}
    resolve_paths(raw, ("state_file", "log", "port", "absent"), tmp_path)
    assert raw == {"state_file": str(tmp_path / "state.json"), "log": "/var/log/x", "port": 53}
