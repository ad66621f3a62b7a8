"""Statements compiled to SQL once, then run with new values: for those every request makes.

Django builds a query's SQL anew each time it runs: cloning the query, resolving every lookup
and join, compiling each expression. On the embedded defaults that cost twenty to thirty times
what SQLite took to answer: the ingest door's series lookup took 1.2 ms of Python for 0.04 ms
of SQL, and a one-slice STOW-RS spent about half of its time building SQL (the README's "One
instance per request").

A :class:`PreparedQuery` (and a :class:`PreparedUpdate`) is written as the ORM query it stands
for, a function of its values. The first time it runs on a database (per alias and vendor) the
function is called with placeholder values and compiled by Django; the SQL and the position of
each placeholder among the statement's parameters are kept. Each later run sends that SQL with
the caller's values in those positions through the connection's ordinary cursor (the same
transactions, database errors, wrappers and query logging as the ORM), and converts the rows
with the converters Django would have applied (UUIDs, booleans, dates). So the SQL is what the
ORM would have sent for those values, without the Python that builds it. A
:class:`PreparedInsert` writes whole rows as ``bulk_create`` does.

Only what keeps that promise is accepted: values of the types declared (``str``, ``int``,
``UUID``), handed by their lookups to the database unchanged — each placeholder must be found
among the compiled parameters, else :class:`ImproperlyConfigured` when the statement is first
compiled (``tests/backend/test_prepared.py`` runs each beside the ORM on PostgreSQL and SQLite).
A query must be a ``values_list`` (rows of plain columns; :func:`instance_from` makes model
instances of them).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar, cast

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet
from django.db.models.constants import OnConflict
from django.db.models.fields import AutoFieldMixin
from django.db.models.sql import UpdateQuery

M = TypeVar("M", bound=Model)

# Placeholders no real value takes: a text with NUL bytes, an integer beyond any key, a UUID
# of no version.
_TEXT_MARK = "\x00artiscan-prepared-{}\x00"
_INT_MARK = -(2**62) + 7919
_UUID_MARK = 0xA57_1CA5_0000_0000_0000_0000_0000_0000


def _placeholder(kind: type, index: int) -> Any:
    if kind is str:
        return _TEXT_MARK.format(index)
    if kind is int:
        return _INT_MARK - index
    if kind is uuid.UUID:
        return uuid.UUID(int=_UUID_MARK + index)
    raise ImproperlyConfigured(f"a prepared query takes str, int and UUID values, not {kind}")


def _as_hex(value: uuid.UUID) -> str:
    return value.hex


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Per statement parameter: the caller's value it takes (its index, and how a UUID is
    # written: as it is or in hex, as the backend's UUIDField writes it), or a constant.
    slots: tuple[tuple[int, Callable[[Any], Any] | None] | None, ...]
    constants: tuple[Any, ...]
    converters: tuple[tuple[int, tuple[Callable[..., Any], ...], Any], ...]


class _Prepared:
    def __init__(self, kinds: tuple[type, ...]) -> None:
        self.kinds = kinds
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        self._lock = threading.Lock()

    def compiled(self, using: str = DEFAULT_DB_ALIAS) -> _Compiled:
        """The statement on database ``using`` (compiled on first use; the tests compile
        each prepared statement on both databases)."""
        connection = connections[using]
        key = (using, connection.vendor)
        found = self._compiled.get(key)
        if found is None:
            with self._lock:
                found = self._compiled.get(key)
                if found is None:
                    found = self._compiled[key] = self._compile(using)
        return found

    def _compiler(self, marks: list[Any], using: str) -> Any:
        raise NotImplementedError

    def _compile(self, using: str) -> _Compiled:
        marks = [_placeholder(kind, i) for i, kind in enumerate(self.kinds)]
        compiler = self._compiler(marks, using)
        sql, params = compiler.as_sql()
        by_mark: dict[Any, tuple[int, Callable[[Any], Any] | None]] = {}
        for i, mark in enumerate(marks):
            by_mark[mark] = (i, None)
            if isinstance(mark, uuid.UUID):
                by_mark[mark.hex] = (i, _as_hex)
        slots: list[tuple[int, Callable[[Any], Any] | None] | None] = []
        constants: list[Any] = []
        for param in params:
            slot = None
            if isinstance(param, (str, int, uuid.UUID)) and not isinstance(param, bool):
                slot = by_mark.get(param)
            slots.append(slot)
            constants.append(None if slot is not None else param)
        missing = sorted(set(range(len(marks))) - {s[0] for s in slots if s is not None})
        if missing:
            raise ImproperlyConfigured(
                f"values {missing} of a prepared statement did not reach its SQL unchanged"
            )
        converters: tuple[tuple[int, tuple[Callable[..., Any], ...], Any], ...] = ()
        if getattr(compiler, "select", None):
            columns = [column for column, _, _ in compiler.select]
            converters = tuple(
                (position, tuple(functions), expression)
                for position, (functions, expression) in compiler.get_converters(columns).items()
            )
        return _Compiled(sql, tuple(slots), tuple(constants), converters)

    def _params(self, values: tuple[Any, ...], compiled: _Compiled) -> list[Any]:
        if len(values) != len(self.kinds):
            raise TypeError(f"{len(self.kinds)} values expected, {len(values)} given")
        for value, kind in zip(values, self.kinds, strict=True):
            if not isinstance(value, kind) or isinstance(value, bool):
                raise TypeError(f"a {kind.__name__} expected, got {type(value).__name__}")
        params = []
        for slot, constant in zip(compiled.slots, compiled.constants, strict=True):
            if slot is None:
                params.append(constant)
            else:
                index, write = slot
                params.append(values[index] if write is None else write(values[index]))
        return params


class PreparedQuery(_Prepared):
    """``build(*placeholders)`` -> a ``values_list`` QuerySet, compiled once per database and
    run with new values by :meth:`rows`. ``kinds``: the type of each value (str, int, UUID)."""

    def __init__(self, build: Callable[..., QuerySet[Any, Any]], *kinds: type) -> None:
        super().__init__(kinds)
        self.build = build

    def _compiler(self, marks: list[Any], using: str) -> Any:
        queryset = self.build(*marks)
        if not getattr(queryset, "_fields", None):
            raise ImproperlyConfigured("a prepared query must be a values_list() of named fields")
        return queryset.query.get_compiler(using=using)

    def rows(self, *values: Any, using: str = DEFAULT_DB_ALIAS) -> list[tuple[Any, ...]]:
        compiled = self.compiled(using)
        params = self._params(values, compiled)
        connection = connections[using]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            fetched = cursor.fetchall()
        if not compiled.converters:
            return [tuple(row) for row in fetched]
        out = []
        for row in fetched:
            converted = list(row)
            for position, functions, expression in compiled.converters:
                value = converted[position]
                for function in functions:
                    value = function(value, expression, connection)
                converted[position] = value
            out.append(tuple(converted))
        return out

    def first(self, *values: Any, using: str = DEFAULT_DB_ALIAS) -> tuple[Any, ...] | None:
        found = self.rows(*values, using=using)
        return found[0] if found else None


class PreparedUpdate(_Prepared):
    """``build(*placeholders)`` -> ``(queryset, {field: value or expression})``, the arguments
    of ``queryset.update(**changes)``, compiled once per database; :meth:`run` returns the
    number of rows changed. A plain ``UPDATE`` of the queryset's own table (no related
    updates, no ``auto_now`` stamps: ``QuerySet.update`` adds none either)."""

    def __init__(
        self,
        build: Callable[..., tuple[QuerySet[Any, Any], dict[str, Any]]],
        *kinds: type,
    ) -> None:
        super().__init__(kinds)
        self.build = build

    def _compiler(self, marks: list[Any], using: str) -> Any:
        queryset, changes = self.build(*marks)
        query = cast(UpdateQuery, queryset.query.chain(UpdateQuery))
        query.add_update_values(changes)
        if query.get_related_updates():
            raise ImproperlyConfigured("a prepared update changes its own table only")
        return query.get_compiler(using=using)

    def run(self, *values: Any, using: str = DEFAULT_DB_ALIAS) -> int:
        compiled = self.compiled(using)
        params = self._params(values, compiled)
        with connections[using].cursor() as cursor:
            cursor.execute(compiled.sql, params)
            return int(cursor.rowcount)


_ROWS = 64


class PreparedInsert(Generic[M]):
    """``bulk_create`` of whole rows of ``model`` (no expressions among the values; no signals,
    as with ``bulk_create``), its SQL made once per database and row count.

    The values are prepared as ``bulk_create`` prepares them (each field's ``pre_save`` — the
    ``auto_now_add`` times — then ``get_db_prep_save``), in rows of one ``VALUES`` list, as
    Django writes them on SQLite; on PostgreSQL Django 5.2 would send one array per column
    (``UNNEST``), whose text psycopg quotes in Python. An automatic primary key is left to the
    database and not read back (the rows' ``pk`` stays ``None``): for rows nobody reads back
    by key, such as the audit log. ``ignore_conflicts``: rows that break a unique constraint
    are skipped, as ``bulk_create(ignore_conflicts=True)`` does."""

    def __init__(self, model: type[M], *, ignore_conflicts: bool = False) -> None:
        self.model = model
        self.on_conflict = OnConflict.IGNORE if ignore_conflicts else None
        opts = model._meta
        self.fields = [
            f
            for f in opts.concrete_fields
            if not (f.primary_key and isinstance(f, AutoFieldMixin)) and not f.generated
        ]
        self._sql: dict[tuple[str, str, int], str] = {}

    def _statement(self, connection: Any, rows: int) -> str:
        key = (connection.alias, connection.vendor, rows)
        found = self._sql.get(key)
        if found is None:
            ops = connection.ops
            quote = ops.quote_name
            group = "(" + ", ".join("%s" for _ in self.fields) + ")"
            found = " ".join(
                part
                for part in (
                    ops.insert_statement(on_conflict=self.on_conflict),
                    quote(self.model._meta.db_table),
                    "(" + ", ".join(quote(f.column) for f in self.fields) + ")",
                    "VALUES " + ", ".join([group] * rows),
                    ops.on_conflict_suffix_sql(self.fields, self.on_conflict, (), ()),
                )
                if part
            )
            self._sql[key] = found
        return found

    def insert(self, objs: Sequence[M], using: str = DEFAULT_DB_ALIAS) -> None:
        if not objs:
            return
        connection = connections[using]
        params: list[list[Any]] = []
        for obj in objs:
            # As bulk_create prepares each object: a default primary key, related objects'
            # keys copied (refusing an unsaved one).
            if obj.pk is None and self.model._meta.pk in self.fields:
                obj.pk = obj._meta.pk.get_pk_value_on_save(obj)
            obj._prepare_related_fields_for_save(operation_name="bulk_create")  # type: ignore[attr-defined]
            row = []
            for f in self.fields:
                value = f.get_db_prep_save(f.pre_save(obj, True), connection)
                if hasattr(value, "as_sql"):
                    raise TypeError(f"{f.name}: a prepared insert takes values, not expressions")
                row.append(value)
            params.append(row)
        # At most _ROWS rows a statement, so a process keeps at most _ROWS statements per table
        # (one per row count) whatever sizes come.
        batch = max(1, min(_ROWS, connection.ops.bulk_batch_size(self.fields, objs)))
        with connection.cursor() as cursor:
            for start in range(0, len(params), batch):
                chunk = params[start : start + batch]
                cursor.execute(
                    self._statement(connection, len(chunk)), [v for row in chunk for v in row]
                )
        for obj in objs:
            obj._state.adding = False
            obj._state.db = using


def field_names(model: type[Model], prefix: str = "") -> list[str]:
    """Every concrete field of ``model`` by its ``attname``, in the model's order, for a
    ``values_list`` (``prefix``: the relation that reaches it, as ``"user__"``)."""
    return [prefix + name for name in _attnames(model)]


@cache
def _attnames(model: type[Model]) -> tuple[str, ...]:
    return tuple(f.attname for f in model._meta.concrete_fields)


def instance_from(model: type[M], row: Sequence[Any], using: str = DEFAULT_DB_ALIAS) -> M:
    """A model instance loaded from ``row`` (converted values of :func:`field_names`), as the
    ORM makes one when it reads a row (``Model.from_db``)."""
    return model.from_db(using, _attnames(model), list(row))
