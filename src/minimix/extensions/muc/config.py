"""Room configuration (XEP-0045 §10.1-10.2): the settings and the ``muc#roomconfig`` data form."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from minimix.protocol import ns
from minimix.protocol.stanza import StanzaError
from minimix.protocol.xml import Element, SubElement, tag

ALLOW_PM = ("anyone", "participants", "moderators", "none")
WHOIS = ("moderators", "anyone")
MAX_USERS_OPTIONS = ("10", "20", "30", "50", "100", "none")

_F = "muc#roomconfig_"


@dataclass(slots=True)
class RoomConfig:
    """What an owner can set. ``max_users`` 0 means no room limit (the service limit applies)."""

    name: str = ""
    description: str = ""
    lang: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password: str = ""
    whois: str = "moderators"  # "anyone": non-anonymous; "moderators": semi-anonymous
    max_users: int = 0
    history_length: int = 20
    change_subject: bool = False  # may participants change the subject?
    allow_pm: str = "anyone"
    allow_invites: bool = False  # may members invite (and so add members) in members-only rooms?
    logging: bool = True  # the room archive (XEP-0313) keeps the discussion

    @property
    def non_anonymous(self) -> bool:
        return self.whois == "anyone"

    @property
    def password_protected(self) -> bool:
        return bool(self.password)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> RoomConfig:
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(RoomConfig)}
        return RoomConfig(**{k: v for k, v in data.items() if k in known})

    def copy(self) -> RoomConfig:
        return dataclasses.replace(self)


# ---------------------------------------------------------------------------- data forms


def _field(
    form: Element,
    var: str,
    ftype: str,
    label: str,
    values: list[str],
    options: tuple[tuple[str, str], ...] = (),
) -> None:
    f = SubElement(form, tag(ns.DATA, "field"), {"var": var, "type": ftype, "label": label})
    for v in values:
        SubElement(f, tag(ns.DATA, "value")).text = v
    for opt_label, opt_value in options:
        o = SubElement(f, tag(ns.DATA, "option"), {"label": opt_label})
        SubElement(o, tag(ns.DATA, "value")).text = opt_value


def _bool(v: bool) -> list[str]:
    return ["1" if v else "0"]


def config_form(config: RoomConfig, room_name: str, max_history: int) -> Element:
    """The ``muc#roomconfig`` form with the room's current settings as values."""
    form = Element(tag(ns.DATA, "x"), {"type": "form"})
    SubElement(form, tag(ns.DATA, "title")).text = f"Configuration for {room_name}"
    SubElement(
        form, tag(ns.DATA, "instructions")
    ).text = "Complete this form to configure the room; submit it unchanged to keep these settings."
    _field(form, "FORM_TYPE", "hidden", "", [ns.MUC_ROOMCONFIG])
    _field(form, _F + "roomname", "text-single", "Room name", [config.name])
    _field(form, _F + "roomdesc", "text-single", "Description", [config.description])
    _field(form, _F + "lang", "text-single", "Language of discussion", [config.lang])
    _field(
        form,
        _F + "persistentroom",
        "boolean",
        "Keep the room when empty?",
        _bool(config.persistent),
    )
    _field(form, _F + "publicroom", "boolean", "List the room publicly?", _bool(config.public))
    _field(form, _F + "membersonly", "boolean", "Members only?", _bool(config.members_only))
    _field(form, _F + "moderatedroom", "boolean", "Moderated?", _bool(config.moderated))
    _field(
        form,
        _F + "passwordprotectedroom",
        "boolean",
        "Password required to enter?",
        _bool(config.password_protected),
    )
    _field(form, _F + "roomsecret", "text-private", "Password", [config.password])
    _field(
        form,
        _F + "whois",
        "list-single",
        "Who may discover real JIDs?",
        [config.whois],
        (("Moderators only", "moderators"), ("Anyone", "anyone")),
    )
    _field(
        form,
        _F + "maxusers",
        "list-single",
        "Maximum number of occupants",
        [str(config.max_users) if config.max_users else "none"],
        tuple((v if v != "none" else "No limit", v) for v in MAX_USERS_OPTIONS),
    )
    _field(
        form,
        "muc#maxhistoryfetch",
        "text-single",
        f"Messages of history sent on entry (up to {max_history})",
        [str(config.history_length)],
    )
    _field(
        form,
        _F + "changesubject",
        "boolean",
        "May participants change the subject?",
        _bool(config.change_subject),
    )
    _field(
        form,
        _F + "allowpm",
        "list-single",
        "Who may send private messages?",
        [config.allow_pm],
        (
            ("Anyone", "anyone"),
            ("Anyone with voice", "participants"),
            ("Moderators only", "moderators"),
            ("Nobody", "none"),
        ),
    )
    _field(
        form,
        _F + "allowinvites",
        "boolean",
        "May members invite others (members-only rooms)?",
        _bool(config.allow_invites),
    )
    _field(
        form,
        _F + "enablelogging",
        "boolean",
        "Keep an archive of the discussion?",
        _bool(config.logging),
    )
    return form


def form_values(form: Element) -> dict[str, list[str]]:
    """``var`` -> values of a submitted data form."""
    out: dict[str, list[str]] = {}
    for f in form.findall(tag(ns.DATA, "field")):
        var = f.get("var")
        if var:
            out[var] = [v.text or "" for v in f.findall(tag(ns.DATA, "value"))]
    return out


def _parse_bool(value: str, var: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true"):
        return True
    if v in ("0", "false"):
        return False
    raise StanzaError("not-acceptable", f"{var}: expected a boolean")


def apply_form(config: RoomConfig, values: dict[str, list[str]], max_history: int) -> RoomConfig:
    """A new configuration from a submitted form; fields not submitted keep their value.

    Raises ``not-acceptable`` for values the room cannot take (XEP-0045 §10.1.3).
    """
    c = config.copy()
    form_type = values.get("FORM_TYPE")
    if form_type and form_type[0] != ns.MUC_ROOMCONFIG:
        raise StanzaError("not-acceptable", "expected a muc#roomconfig form")

    def one(var: str) -> str | None:
        v = values.get(var)
        return v[0] if v else None

    booleans = {
        "persistentroom": "persistent",
        "publicroom": "public",
        "membersonly": "members_only",
        "moderatedroom": "moderated",
        "changesubject": "change_subject",
        "allowinvites": "allow_invites",
        "enablelogging": "logging",
        "enablearchiving": "logging",
    }
    for suffix, attr in booleans.items():
        v = one(_F + suffix)
        if v is not None:
            setattr(c, attr, _parse_bool(v, _F + suffix))
    for suffix, attr in (("roomname", "name"), ("roomdesc", "description"), ("lang", "lang")):
        if _F + suffix in values:
            setattr(c, attr, "\n".join(values[_F + suffix]).strip())
    protected = one(_F + "passwordprotectedroom")
    secret = one(_F + "roomsecret")
    if secret is not None:
        c.password = secret
    if protected is not None and not _parse_bool(protected, _F + "passwordprotectedroom"):
        c.password = ""
    elif protected is not None and not c.password:
        raise StanzaError("not-acceptable", "a password-protected room needs a password")
    whois = one(_F + "whois")
    if whois is not None:
        if whois not in WHOIS:
            raise StanzaError("not-acceptable", "muc#roomconfig_whois: moderators or anyone")
        c.whois = whois
    maxusers = one(_F + "maxusers")
    if maxusers is not None:
        if maxusers.strip().lower() in ("none", "", "0"):
            c.max_users = 0
        elif maxusers.strip().isdigit():
            c.max_users = int(maxusers)
        else:
            raise StanzaError("not-acceptable", "muc#roomconfig_maxusers: a number or none")
    history = one("muc#maxhistoryfetch")
    if history is None:
        history = one(_F + "historylength")
    if history is not None:
        if not history.strip().isdigit():
            raise StanzaError("not-acceptable", "muc#maxhistoryfetch: a number")
        c.history_length = min(int(history), max_history)
    allow_pm = one(_F + "allowpm")
    if allow_pm is not None:
        if allow_pm not in ALLOW_PM:
            raise StanzaError("not-acceptable", "muc#roomconfig_allowpm: " + ", ".join(ALLOW_PM))
        c.allow_pm = allow_pm
    return c
