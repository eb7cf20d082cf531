"""Usage errors are one sentence with exit code 2, never an 'internal error'."""

import subprocess
import sys

import pytest

from lab.shared.pki import create_signing_key
from lab.shared.tokens import issue_token


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
