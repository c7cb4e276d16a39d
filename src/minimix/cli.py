"""The ``minimix`` command: serve, manage users, check the configuration."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from pathlib import Path

from minimix import __version__
from minimix.config import Config, ConfigError, load
from minimix.storage.database import StorageError


class UsageError(Exception):
    """A bad argument: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"minimix: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="minimix", description="An XMPP server where accounts join group chats.")
    p.add_argument("--version", action="version", version=f"minimix {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "--config", metavar="FILE", help="TOML configuration (default ./minimix.toml)"
        )
        return sp

    with_config(sub.add_parser("serve", help="run the server"))
    with_config(sub.add_parser("check", help="validate configuration and certificates"))
    user = sub.add_parser("user", help="manage accounts")
    usub = user.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = with_config(usub.add_parser("add", help="create an account"))
    add.add_argument("jid")
    add.add_argument("--password")
    pw = with_config(usub.add_parser("passwd", help="change a password"))
    pw.add_argument("jid")
    pw.add_argument("--password")
    rm = with_config(usub.add_parser("delete", help="delete an account"))
    rm.add_argument("jid")
    with_config(usub.add_parser("list", help="list accounts"))
    rooms = with_config(sub.add_parser("rooms", help="show which accounts are in which rooms"))
    rooms.add_argument("--account", help="only this account")
    demo = with_config(sub.add_parser("demo", help="show account-join with two clients"))
    demo.add_argument("--keep", action="store_true", help="keep the demo data directory")
    return p


def _username(config: Config, text: str) -> str:
    from minimix.protocol.jid import JID, InvalidJID

    try:
        jid = JID.parse(text if "@" in text else f"{text}@{config.domain}")
    except InvalidJID as exc:
        raise UsageError(f"JID: {exc}") from None
    if jid.domain != config.domain or not jid.local or jid.resource:
        raise UsageError(f"JID: expected user@{config.domain}, got {text!r}")
    return jid.local


def _password(given: str | None) -> str:
    if given is not None:
        if not given:
            raise UsageError("--password: must not be empty")
        return given
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            raise UsageError("--password: give a password or type one on standard input")
        return line
    first = getpass.getpass("Password: ")
    second = getpass.getpass("Again: ")
    if first != second:
        raise UsageError("passwords do not match")
    if not first:
        raise UsageError("password must not be empty")
    return first


def _user(args: argparse.Namespace, config: Config) -> int:
    from minimix.app import open_database
    from minimix.storage.stores import AccountStore
    from minimix.stream.sasl import SaslFailure, prepare_password

    accounts = AccountStore(open_database(config))
    if args.action == "list":
        for name in accounts.list():
            print(f"{name}@{config.domain}")
        return 0
    user = _username(config, args.jid)
    if args.action == "add":
        if accounts.exists(user):
            print(f"minimix: {user}@{config.domain} already exists", file=sys.stderr)
            return 1
        password = _password(args.password)
        try:
            prepare_password(password)
        except SaslFailure:
            raise UsageError("--password: contains characters a password may not hold") from None
        accounts.create(user, password)
        print(f"created {user}@{config.domain}")
        return 0
    if not accounts.exists(user):
        print(f"minimix: no account {user}@{config.domain}", file=sys.stderr)
        return 1
    if args.action == "passwd":
        accounts.set_password(user, _password(args.password))
        print(f"password changed for {user}@{config.domain}")
        return 0
    if args.action == "delete":
        accounts.delete(user, f"{user}@{config.domain}")
        print(f"deleted {user}@{config.domain}")
        return 0
    return 2


def _check(config: Config) -> int:
    from minimix.core.tls import check_certificate

    problems: list[str] = []
    print(f"configuration: {config.source}")
    print(f"domain: {config.domain}; group chat: {config.muc.domain or 'disabled'}")
    data = Path(config.data_dir)
    if data.exists() and not data.is_dir():
        problems.append(f"data_dir: {data} exists and is not a directory")
    if config.tls.certificate:
        problems += check_certificate(
            Path(config.tls.certificate), Path(config.tls.key), config.domain
        )
    else:
        cert = data / "tls" / "self-signed.crt"
        if cert.exists():
            problems += check_certificate(cert, data / "tls" / "self-signed.key", config.domain)
        print(
            "tls: no certificate configured; a self-signed one is used "
            "(clients will warn; configure [tls] for a real domain)"
        )
    if not config.c2s.require_encryption:
        problems.append("warning: c2s.require_encryption is false; passwords may cross in clear")
    if config.registration.open and config.registration.throttle_per_ip == 0:
        problems.append("warning: registration is open without a per-IP throttle")
    limits = config.limits
    for key in ("auth_failures_per_ip", "auth_failures_per_account"):
        if getattr(limits, key) == 0:
            problems.append(f"warning: limits.{key} is 0: password guessing is not throttled")
    for key in ("unauthenticated_per_ip", "resources_per_account"):
        if getattr(limits, key) == 0:
            problems.append(f"limits.{key} is 0: no client could ever log in")
    if limits.max_stanza_size > 4 * 1024 * 1024:
        problems.append(
            "warning: limits.max_stanza_size is above 4 MiB; one client can make "
            "the server buffer that much per connection"
        )
    errors = [p for p in problems if not p.startswith("warning")]
    for p in problems:
        print(p)
    if not problems:
        print("ok")
    return 1 if errors else 0


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def _serve(config: Config) -> int:
    from minimix.app import Server

    _configure_logging(config.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        server = Server(config)
        await server.run_forever()

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"minimix: cannot listen: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load(args.config)
        if args.command == "serve":
            return _serve(config)
        if args.command == "check":
            return _check(config)
        if args.command == "user":
            return _user(args, config)
        if args.command == "rooms":
            from minimix.operator import show_rooms

            return int(show_rooms(config, args.account))
        if args.command == "demo":
            from minimix.demo import run_demo

            return int(run_demo(config, args.keep))
    except (ConfigError, UsageError) as exc:
        print(f"minimix: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"minimix: storage error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
