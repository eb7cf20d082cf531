"""Usage errors are one sentence with exit code 2, never an 'internal error'."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.shared.pki import create_signing_key
from lab.shared.tokens import issue_token

DEFAULT = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"


@pytest.mark.parametrize("argv", [["nosuch"], ["up", "--bogus"], ["token", "revoke", "-x"]])
def test_usage_errors_exit_2_with_one_sentence(argv):
    result = subprocess.run([sys.executable, "-m", "lab", *argv], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "internal error" not in result.stderr
    assert "Traceback" not in result.stderr


def test_token_ids_never_look_like_options():
    key = create_signing_key()
    for _ in range(200):
        _token, claims = issue_token(key, issuer="i", audience="a", client_id="c", sub="s",
                                     scope="x", ttl_s=60)
        assert not claims["jti"].startswith("-")
        int(claims["jti"], 16)  # hex


@pytest.mark.parametrize("option", ["--name", "--lab"])
def test_up_takes_the_lab_name_as_down_does(option, tmp_path):
    """`up --lab X` names the lab as `down --lab X` finds it (`--name` is the same)."""
    missing = tmp_path / "missing.yaml"
    result = subprocess.run([sys.executable, "-m", "lab", "up", str(missing), option, "x1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "no such option" not in result.stderr.lower()
    assert "does not exist" in result.stderr  # the file's error: the option was taken


def _lab(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *argv], capture_output=True,
                          text=True, timeout=60)


def _one_sentence(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and words in result.stderr, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_a_fifo_directory_or_binary_file_as_topology_is_refused_at_once(tmp_path):
    fifo, folder, binary = tmp_path / "fifo.yaml", tmp_path / "dir", tmp_path / "bin.yaml"
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    folder.mkdir()
    binary.write_bytes(b"name: x\n\xff\xfe\n")
    _one_sentence(_lab("validate", str(fifo)), "is not a regular file")
    _one_sentence(_lab("validate", str(folder)), "is a directory")
    _one_sentence(_lab("validate", str(binary)), "is not UTF-8 text")
    _one_sentence(_lab("validate", "x" * 300), "File name too long")


def test_an_output_path_through_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "afile").write_text("")
    _one_sentence(_lab("export", "containerlab", str(DEFAULT), "-o",
                       str(tmp_path / "afile" / "sub")), "Not a directory")
