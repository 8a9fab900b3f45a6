"""Customer records merged across sites: field-level last-writer-wins on hybrid logical clocks.

Pure code, no I/O. A :class:`CustomerChange` sets some fields of one customer, stamped with the
:class:`~gateway.store.hlc.Hlc` of the site that made it. A merged record holds every field of
:data:`CUSTOMER_FIELDS` plus ``"_stamps"``: for each field ever set, the stamp of the change whose
value it holds::

    {"customer_id": "C1", "phones": ["+862155550100"], "name": "Li Lei", ..., "vip": False,
     "_stamps": {"name": {"hlc": "001700000000000-000000-sh", "site": "sh", "author": "1001"}}}

Per field the winner is the greatest ``(hlc, site, value, author)`` (value compared as canonical
JSON, a tie-break that only matters for two changes claiming the same stamp). Picking a maximum
under a total order makes :func:`merge` commutative, associative and idempotent: every site that
has seen the same set of changes holds the same record, whatever the order and duplication in
which they arrived (a state-based CRDT: a join-semilattice of per-field LWW registers).

Nothing is ever deleted: clearing an optional field (``None``) is an edit like any other, and a
change that tries to delete a record or drop its identity is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from gateway.store.hlc import Hlc

__all__ = [
    "CUSTOMER_FIELDS",
    "STAMPS",
    "CustomerChange",
    "FieldSpec",
    "merge",
    "merge_all",
    "merge_records",
    "new_record",
    "normalize_phone",
    "record_changes",
]

STAMPS: Final = "_stamps"
"""Key of the per-field stamps in a merged record."""

_MAX_TEXT: Final = 64 * 1024
_PHONE_SEPARATORS: Final = re.compile(r"[\s\-.()/]")
# E.164 (ITU-T E.164 §6): at most 15 digits after "+"; local forms and extensions are shorter.
_PHONE_RE: Final = re.compile(r"\+?[0-9]{1,20}")
_DELETE_KEYS: Final = frozenset({"delete", "deleted", "_delete", "_deleted"})


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What one customer field holds."""

    kind: type
    """``str``, ``bool`` or ``list`` (a list of phone numbers)."""
    nullable: bool
    """May be cleared to ``None``."""
    default: Any
    """Value of a field no change has set yet."""


CUSTOMER_FIELDS: Final[Mapping[str, FieldSpec]] = MappingProxyType(
    {
        "customer_id": FieldSpec(str, False, None),  # the identity; never changes
        "phones": FieldSpec(list, False, ()),  # normalised numbers, first = primary
        "region": FieldSpec(str, True, None),  # e.g. "shanghai": where the customer lives
        "name": FieldSpec(str, False, ""),
        "tier": FieldSpec(str, True, None),  # e.g. "gold"
        "named_agent": FieldSpec(str, True, None),  # the agent who owns the customer
        "notes": FieldSpec(str, False, ""),
        "vip": FieldSpec(bool, False, False),
        "language": FieldSpec(str, True, None),  # e.g. "zh", "en"
        "email": FieldSpec(str, True, None),
    }
)
"""Every field of a customer record and its type. ``customer_id`` is the identity: a change
names it in :attr:`CustomerChange.customer_id`, not among its fields."""

_EDITABLE: Final = frozenset(CUSTOMER_FIELDS) - {"customer_id"}


def normalize_phone(number: str) -> str:
    """``number`` without separators (spaces, ``-``, ``.``, ``(``, ``)``, ``/``): ``"+86 21
    5555-0100"`` → ``"+862155550100"``. ``ValueError`` if what is left is not ``[+]digits``."""
    compact = _PHONE_SEPARATORS.sub("", number)
    if _PHONE_RE.fullmatch(compact) is None:
        raise ValueError(f"not a phone number: {number!r}")
    return compact


def _check_value(name: str, value: Any) -> Any:
    """``value`` validated (and normalised) for field ``name``."""
    spec = CUSTOMER_FIELDS[name]
    if value is None:
        if not spec.nullable:
            raise ValueError(f"customer field {name!r} cannot be cleared (None)")
        return None
    if spec.kind is list:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"customer field {name!r} is a list of phone numbers")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"customer field {name!r} holds strings, not {item!r}")
            phone = normalize_phone(item)
            if phone not in out:
                out.append(phone)
        return out
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"customer field {name!r} is true or false, not {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"customer field {name!r} is text, not {value!r}")
    if len(value) > _MAX_TEXT:
        raise ValueError(f"customer field {name!r} is longer than {_MAX_TEXT} characters")
    return value


@dataclass(frozen=True, slots=True)
class CustomerChange:
    """One edit of one customer at one site: new values for some fields, stamped ``hlc``.

    Validated on construction (``ValueError``): known fields only, values of the right type,
    phones normalised; a "delete" or clearing the identity is refused.
    """

    customer_id: str
    fields: Mapping[str, Any]
    """Field name → new value (at least one field; ``customer_id`` is not a field here)."""
    hlc: Hlc
    site: str
    """The site where the edit was made."""
    author: str
    """Who made it (an agent id, ``"import"``, ``"ivr"``...)."""

    def __post_init__(self) -> None:
        if not isinstance(self.customer_id, str) or not self.customer_id:
            raise ValueError("customer_id is required (a non-empty string)")
        if not isinstance(self.site, str) or not self.site:
            raise ValueError("site is required")
        if not isinstance(self.author, str):
            raise ValueError("author is a string")
        if not isinstance(self.hlc, Hlc):
            raise ValueError("hlc is an Hlc stamp")
        if not isinstance(self.fields, Mapping):
            raise ValueError("fields is a mapping of field name to value")
        deleting = _DELETE_KEYS.intersection(self.fields)
        if deleting:
            raise ValueError("customer records are never deleted; a delete is not a change")
        checked: dict[str, Any] = {}
        for name, value in self.fields.items():
            if name == "customer_id":
                if value != self.customer_id:
                    raise ValueError("a change cannot alter or clear the customer_id")
                continue
            if name not in _EDITABLE:
                raise ValueError(f"unknown customer field {name!r}")
            checked[name] = _check_value(name, value)
        if not checked:
            raise ValueError("a change sets at least one field")
        object.__setattr__(self, "fields", MappingProxyType(checked))

    def to_payload(self, only: Collection[str] | None = None) -> dict[str, Any]:
        """JSON-ready form (the outbox payload). ``only``: keep just these fields (the export
        filter); the result may then have no fields at all."""
        fields = {
            k: (list(v) if isinstance(v, list) else v)
            for k, v in self.fields.items()
            if only is None or k in only
        }
        return {
            "customer_id": self.customer_id,
            "fields": fields,
            "hlc": str(self.hlc),
            "site": self.site,
            "author": self.author,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> CustomerChange:
        """The change :meth:`to_payload` produced; ``ValueError`` for a malformed payload."""
        try:
            return cls(
                customer_id=payload["customer_id"],
                fields=payload["fields"],
                hlc=Hlc.parse(payload["hlc"]),
                site=payload["site"],
                author=payload["author"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed customer change: {exc!r}") from exc


def new_record(customer_id: str) -> dict[str, Any]:
    """A record no change has touched: every field at its default."""
    out: dict[str, Any] = {
        name: (list(spec.default) if spec.kind is list else spec.default)
        for name, spec in CUSTOMER_FIELDS.items()
    }
    out["customer_id"] = customer_id
    out[STAMPS] = {}
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _wins(new: Mapping[str, str], new_value: Any, old: Mapping[str, str], old_value: Any) -> bool:
    """Does ``(new, new_value)`` beat ``(old, old_value)``? Total order on
    ``(hlc, site, canonical value, author)``; HLC text sorts like the stamps."""
    if new["hlc"] != old["hlc"]:
        return new["hlc"] > old["hlc"]
    if new["site"] != old["site"]:
        return new["site"] > old["site"]
    nv, ov = _canonical(new_value), _canonical(old_value)
    if nv != ov:
        return nv > ov
    return new["author"] > old["author"]


def _start(record: Mapping[str, Any] | None, customer_id: str) -> dict[str, Any]:
    if record is None:
        return new_record(customer_id)
    if record.get("customer_id") != customer_id:
        raise ValueError(
            f"cannot merge customer {customer_id!r} into record {record.get('customer_id')!r}"
        )
    out = new_record(customer_id)
    out.update(record)
    out[STAMPS] = dict(record.get(STAMPS) or {})
    return out


def merge(record: Mapping[str, Any] | None, change: CustomerChange) -> dict[str, Any]:
    """``record`` (``None``: a customer not seen yet) with ``change`` applied: per field, the
    value whose stamp is greatest is kept. Returns a new dict; the inputs are not modified."""
    out = _start(record, change.customer_id)
    stamps: dict[str, Any] = out[STAMPS]
    stamp = {"hlc": str(change.hlc), "site": change.site, "author": change.author}
    for name, value in change.fields.items():
        old = stamps.get(name)
        if old is None or _wins(stamp, value, old, out.get(name)):
            out[name] = list(value) if isinstance(value, list) else value
            stamps[name] = stamp
    return out


def merge_records(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> dict[str, Any]:
    """The join of two merged records of the same customer (as if every change behind either
    had been applied to one record). ``a`` may be ``None``."""
    out = _start(a, b["customer_id"])
    stamps: dict[str, Any] = out[STAMPS]
    for name, stamp in (b.get(STAMPS) or {}).items():
        if name not in _EDITABLE:
            continue
        value = b.get(name)
        old = stamps.get(name)
        if old is None or _wins(stamp, value, old, out.get(name)):
            out[name] = list(value) if isinstance(value, list) else value
            stamps[name] = dict(stamp)
    return out


def record_changes(record: Mapping[str, Any]) -> list[CustomerChange]:
    """A merged record as the changes that produced its current values (one per distinct
    stamp), oldest first. Merging them into any record equals :func:`merge_records`."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for name, stamp in (record.get(STAMPS) or {}).items():
        if name not in _EDITABLE:
            continue
        key = (stamp["hlc"], stamp["site"], stamp["author"])
        groups.setdefault(key, {})[name] = record.get(name)
    return [
        CustomerChange(record["customer_id"], fields, Hlc.parse(hlc), site, author)
        for (hlc, site, author), fields in sorted(groups.items())
    ]


def merge_all(
    record: Mapping[str, Any] | None, changes: Iterable[CustomerChange]
) -> dict[str, Any] | None:
    """``record`` with every change applied (``None`` if ``record`` is ``None`` and there are
    no changes)."""
    out = None if record is None else dict(record)
    for change in changes:
        out = merge(out, change)
    return out
