"""utils/cli.py: how an entry script ends."""
import errno
import sys

import pytest

from utils.cli import run_main
from utils.errors import UserError


def _exit(main, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["x.py"])
    with pytest.raises(SystemExit) as e:
        run_main(main)
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_a_refused_write_mid_run_is_one_line(code, capsys, monkeypatch):
    def main():
        raise OSError(code, "refused", "/runs/x/model.pt")

    status, err = _exit(main, capsys, monkeypatch)
    assert status == 1 and err.count("\n") == 1 and err.startswith("x.py: error: cannot write /runs/x/model.pt")


def test_other_errors_keep_their_traceback(capsys, monkeypatch):
    def main():
        raise OSError(errno.EIO, "io", "/f")

    with pytest.raises(OSError):
        _exit(main, capsys, monkeypatch)


def test_user_error_and_interrupt(capsys, monkeypatch):
    def bad():
        raise UserError("--x 1: no")

    def stop():
        raise KeyboardInterrupt

    assert _exit(bad, capsys, monkeypatch) == (2, "x.py: error: --x 1: no\n")
    assert _exit(stop, capsys, monkeypatch) == (130, "x.py: interrupted\n")
