"""The config file's schema layer: TOML tables as typed pydantic models, refusals as `key: problem`.

Each table of the file is a :class:`Table`: a frozen pydantic model that refuses unknown keys
with a hint (``unknown key (did you mean 'interval'?)``) and names a missing one with what it is
for. Its values are typed with the annotated types below, each of which refuses in the words an
operator reads, e.g. ``must be a positive number, got "fast"``. :func:`validate` runs a model
over a parsed document and turns the first error into a :class:`Problem` whose key is the path
as the file spells it (``adaptor[1].health.interval``). Pure: no I/O.

Why pydantic (v2): its errors carry a structured location, so one function renders every
message as ``key: problem``; validators raise errors of our own wording; and the Ethereum
adaptor's signing library already installs it.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from sdk import contract

_M = TypeVar("_M", bound=BaseModel)


class Problem(ValueError):
    """A value the schema refuses: ``key`` (e.g. ``peer[0].url``, "" for the whole document)
    and ``problem`` (what is wrong, and how to mend it)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


def refuse(problem: str, *at: str | int) -> PydanticCustomError:
    """The error a validator raises; ``at`` names a key below the one being validated (a
    model's validator refusing one of its fields, or a list's validator one of its items)."""
    return PydanticCustomError("config", "{problem}", {"problem": problem, "at": at})


class Table(BaseModel):
    """A TOML table: its keys are the fields; unknown keys and missing required ones refused.

    A field's ``description`` says what a missing required key is for.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # pydantic refuses it as "not a table"
        known = tuple(cls.model_fields)
        for name in data:
            if name not in known:
                hint = difflib.get_close_matches(name, known, n=1)
                advice = f"did you mean {hint[0]!r}?" if hint else f"known: {', '.join(known)}"
                raise refuse(f"unknown key ({advice})", name)
        for name, field in cls.model_fields.items():
            if field.is_required() and name not in data:
                why = f" ({field.description})" if field.description else ""
                raise refuse(f"missing{why}", name)
        return data


def validate(model: type[_M], document: object) -> _M:
    """``document`` (parsed TOML) as a ``model``, or the first :class:`Problem` in it."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise _problem(exc.errors(include_url=False)[0]) from None


def _problem(error: ErrorDetails) -> Problem:
    # A dict's key is reported at (..., key, "[key]"): the key itself is the location.
    loc = [part for part in error["loc"] if part != "[key]"]
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind == "config":
        loc.extend(ctx["at"])
        problem = str(ctx["problem"])
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        problem = f"must be a table, got {show(error['input'])}"
    elif kind in ("tuple_type", "list_type") and loc:
        problem = f"must be an array of tables: write [[{loc[-1]}]]"
    else:  # a type of ours without its own wording: pydantic's, which says what it expects
        problem = error["msg"]
    return Problem(key_of(loc), problem)


def key_of(loc: Sequence[str | int]) -> str:
    """A location as the file spells it: ``("adaptor", 1, "health")`` -> ``adaptor[1].health``."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else part)
    return key


def show(value: object) -> str:
    """A value as the TOML author wrote it (strings quoted, long ones cut), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value[:80], ensure_ascii=False)
        return shown if len(value) <= 80 else f"{shown}..."
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return f"a date/time ({value.isoformat()})"
    return type(value).__name__


# -- value types ---------------------------------------------------------------------------------


def text(value: object) -> str:
    """A non-empty string without NUL (which no path, name or argument may hold)."""
    if not isinstance(value, str):
        raise refuse(f"must be a string, got {show(value)}")
    if not value:
        raise refuse("must not be empty")
    if "\0" in value:
        raise refuse("must not contain a NUL character")
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise refuse(f"must be true or false, got {show(value)}")
    return value


def number(kind: str, accept: Callable[[float], bool]) -> Callable[[object], float]:
    """A validator of a finite number (an integer or a float, never a boolean) that
    ``accept``s; refused as "must be ``kind``"."""

    def check(value: object) -> float:
        # bool is an int in Python, but `interval = true` is a mistake, not 1 second.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not accept(value)
        ):
            raise refuse(f"must be {kind}, got {show(value)}")
        return float(value)

    return check


def whole_number(low: int, high: int, kind: str) -> Callable[[object], int]:
    """A validator of an integer from ``low`` to ``high``; refused as "must be ``kind``"."""

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise refuse(f"must be {kind}, got {show(value)}")
        return value

    return check


def host_port(value: object) -> tuple[str, int]:
    """``"HOST:PORT"`` (``[v6]:PORT`` too) with a port from 1 to 65535."""
    address = text(value)
    host, colon, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise refuse(f'must be "HOST:PORT" with a port from 1 to 65535, got {show(value)}')
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine: a listener there needs no
    TLS (``localhost``, 127.0.0.0/8, ::1; "" and 0.0.0.0 mean every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def account_id(value: object) -> str:
    """A peer account's id: the adaptor contract's grammar."""
    given = text(value)
    if not contract.is_account_id(given):
        raise refuse(f"must be {contract.ACCOUNT_ID_RULE}, got {show(given)}")
    return given


Text = Annotated[str, PlainValidator(text)]
AccountId = Annotated[str, PlainValidator(account_id)]
Boolean = Annotated[bool, PlainValidator(boolean)]
PositiveNumber = Annotated[float, PlainValidator(number("a positive number", lambda v: v > 0))]
NonNegativeNumber = Annotated[float, PlainValidator(number("a number >= 0", lambda v: v >= 0))]
Count = Annotated[int, PlainValidator(whole_number(1, 2**63 - 1, "a whole number >= 1"))]
HostPort = Annotated[tuple[str, int], PlainValidator(host_port)]
