"""The `minimix` command in-process: user management, argument errors, the XEP list script."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest

from minimix.cli import main
from minimix.storage.database import Database
from minimix.storage.stores import AccountStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "minimix.toml"
    path.write_text(f'domain = "example.org"\ndata_dir = "{tmp_path / "data"}"\n')
    return path


def test_user_life_cycle(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = ["--config", str(cfg)]
    assert main(["user", "add", "Alice@Example.org", "--password", "pw", *c]) == 0
    assert capsys.readouterr().out == "created alice@example.org\n"
    assert main(["user", "add", "bob", "--password", "pw2", *c]) == 0
    assert main(["user", "list", *c]) == 0
    assert capsys.readouterr().out.split() == ["created", "bob@example.org", "alice@example.org",
                                               "bob@example.org"]  # fmt: skip
    assert main(["user", "add", "bob", "--password", "again", *c]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["user", "passwd", "bob", "--password", "new", *c]) == 0
    accounts = AccountStore(Database(tmp_path / "data" / "minimix.sqlite3"))
    from minimix.stream.sasl import check_password

    creds = accounts.credentials("bob", "SHA-256")
    assert creds is not None and check_password("new", creds, "SHA-256")
    assert main(["user", "delete", "bob@example.org", *c]) == 0
    assert accounts.list() == ["alice"]
    accounts.db.close()


def test_password_from_standard_input(
    cfg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    assert main(["user", "add", "carol", "--config", str(cfg)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["user", "add", "dave", "--config", str(cfg)]) == 2
    assert "--password" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["user", "add", "a@other.org", "--password", "x"], "JID: expected user@example.org"),
        (["user", "add", "a@example.org/res", "--password", "x"], "JID"),
        (["user", "add", "bad user", "--password", "x"], "JID"),
        (["user", "add", "ok", "--password", "bell\u0007"], "--password"),
    ],
)
def test_usage_errors(
    cfg: Path, args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minimix: ") and needle in err and err.count("\n") == 1


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--nope"])
    assert exc.value.code == 2
    assert "--nope" in capsys.readouterr().err


def test_check_on_defaults(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "domain: example.org; group chat: conference.example.org" in out
    assert "self-signed" in out


def test_xep_list_names_every_core_extension() -> None:
    spec = importlib.util.spec_from_file_location("list_xeps", ROOT / "scripts" / "list-xeps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.render()
    for xep in ("XEP-0030", "XEP-0077", "XEP-0092", "XEP-0160", "XEP-0191", "XEP-0199",
                "XEP-0054", "RFC 6121", "RFC 6120", "XEP-0114", "XEP-0368"):  # fmt: skip
        assert f"| {xep}" in text, xep
    assert (ROOT / "docs" / "xeps.md").exists()
