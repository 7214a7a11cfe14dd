"""models/checkpoint.py: damaged and unsafe checkpoint files are one-line refusals."""
import os
import pickle
import warnings

import main_forget
from helpers import run_cli


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unsafe_pickle_is_refused_in_one_line_without_torch_warnings(tmp_path, monkeypatch, capsys):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Evil(), protocol=4))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, out, err = run_cli(main_forget, ["--unlearn", "FT", "--dataset", "digits", "--arch", "cnn_s", "--mask",
                                               str(evil), "--num_indexes_to_replace", "10"], monkeypatch, capsys,
                                 tmp_path)
    assert not [w for w in seen if "torch" in str(w.filename)]  # torch's pickle-protocol warning would print
    assert code == 2 and err.count("\n") == 1 and "cannot read the checkpoint" in err and "never loaded" in err and "pwned" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


def test_empty_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    code, out, err = run_cli(main_forget, ["--unlearn", "FT", "--dataset", "digits", "--arch", "cnn_s", "--mask",
                                           str(tmp_path / "empty.pt"), "--num_indexes_to_replace", "10"],
                             monkeypatch, capsys, tmp_path)
    assert code == 2 and err.count("\n") == 1 and "cannot read the checkpoint" in err
