"""Insert registry rows without the ORM's per-instance machinery, for provisioning hot paths.

`Model.objects.create()` costs ~0.5 ms a row here (instance set-up, signals, save machinery)
against ~0.15 ms for the same INSERT; creating a tenant or a run inserts two rows. Column names,
defaults and value conversions still come from the model's fields, so the SQL cannot drift from
the schema. No signals are sent: do not use it for models that rely on them.
"""

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.db import connections, router
from django.db.models import Model

M = TypeVar("M", bound=Model)


def insert_row(model: type[M], *, using: str = "default", **values: Any) -> M:
    """INSERT one row of `model` (defaults filled in) and return it as a saved instance."""
    meta = model._meta
    connection = connections[using]
    fields, row = [], {}
    for field in meta.concrete_fields:
        if field.attname in values:
            value = values[field.attname]
        elif field.name in values:
            value = values[field.name]
            value = value.pk if isinstance(value, Model) else value
        elif field.primary_key and field.get_internal_type().endswith("AutoField"):
            continue
        else:
            value = field.get_default()
        fields.append(field)
        row[field.attname] = value
    unknown = set(values) - {f.attname for f in fields} - {f.name for f in fields}
    if unknown:
        raise TypeError(f"{model.__name__} has no fields {sorted(unknown)}.")
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({}) RETURNING {}".format(
        quote(meta.db_table),
        ", ".join(quote(str(f.column)) for f in fields),
        ", ".join(["%s"] * len(fields)),
        quote(str(meta.pk.column)),
    )
    params = [f.get_db_prep_save(row[f.attname], connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row[meta.pk.attname] = cursor.fetchone()[0]
    names = [f.attname for f in meta.concrete_fields]
    return model.from_db(using, names, [row.get(name) for name in names])


class _Plan:
    """One model's INSERT of every concrete column but an auto primary key, on the raw
    connection, and the stored form of the defaults that are constants."""

    def __init__(self, model: type[Model]):
        meta = model._meta
        self.pk = meta.pk
        self.fields = [
            f
            for f in meta.concrete_fields
            if not (f.primary_key and f.get_internal_type().endswith("AutoField"))
        ]
        self.sql = 'INSERT INTO "{}" ({}) VALUES ({}) RETURNING "{}"'.format(
            meta.db_table,
            ", ".join(f'"{f.column}"' for f in self.fields),
            ", ".join("?" * len(self.fields)),
            self.pk.column,
        )
        self.constant_defaults: dict[str, Any] | None = None
        self.attnames = frozenset(f.attname for f in self.fields)
        self.columns = [
            (f, f.attname, str(f.column), _KINDS.get(f.get_internal_type())) for f in self.fields
        ]

    def defaults(self, connection: Any) -> dict[str, Any]:
        if self.constant_defaults is None:
            self.constant_defaults = {
                f.attname: _stored(f.get_db_prep_save(f.get_default(), connection))
                for f in self.fields
                # No default (NULL, or "" for text) or a constant one: the same every row.
                if not f.has_default() or not callable(f.default)
            }
        return self.constant_defaults


_plans: dict[type[Model], _Plan] = {}

# Fields whose stored form of a plain value is known without Django's per-field machinery
# (~10-20 us a field; the run writer's critical section inserts a row per tool call): the value
# itself (text, integers, floats of exactly that type), or JSON text. Anything else takes the
# field's `get_db_prep_save`.
_KINDS = {
    "CharField": str,
    "TextField": str,
    "IntegerField": int,
    "BigIntegerField": int,
    "SmallIntegerField": int,
    "PositiveIntegerField": int,
    "PositiveBigIntegerField": int,
    "PositiveSmallIntegerField": int,
    "FloatField": float,
    "JSONField": "json",
    "DateTimeField": "datetime",
}
_JSON_TYPES = (dict, list, str, int, float, bool)


def _stored(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value  # SQLite keeps booleans as 0/1


def _stored_value(field: Any, kind: Any, value: Any, connection: Any) -> Any:
    """`_stored(field.get_db_prep_save(value, connection))`, short-cut for plain values."""
    if value is None or (kind is not None and type(value) is kind):
        return value  # what every field's get_db_prep_save gives back for these
    if kind == "json" and type(value) in _JSON_TYPES:
        return json.dumps(value, cls=field.encoder)  # JSONField, as Django adapts it
    if kind == "datetime" and _utc_into_utc(value, connection):
        return str(value.replace(tzinfo=None))
    return _stored(field.get_db_prep_save(value, connection))


def _utc_into_utc(value: Any, connection: Any) -> bool:
    return type(value) is datetime and value.tzinfo is UTC and connection.timezone is UTC


def stored_datetime(value: datetime, connection: Any) -> str:
    """The text Django's SQLite backend stores for the aware datetime `value` (a DateTimeField):
    in the connection's time zone, naive. A UTC datetime into a UTC connection (the settings'
    case, `timezone.now()`) skips Django's conversions; anything else goes through them."""
    if _utc_into_utc(value, connection):
        return str(value.replace(tzinfo=None))
    return str(connection.ops.adapt_datetimefield_value(value))


@contextmanager
def raw_connection(using: str) -> Iterator[Any]:
    """The sqlite3 connection under Django's alias `using` (opened if need be), its errors
    raised as Django's: for the run writer's hot path, where Django's cursor wrapper costs
    more than the statement."""
    connection = connections[using]
    connection.ensure_connection()
    with connection.wrap_database_errors:
        yield connection.connection


def insert_stored(model: type[Model], *, using: str, **values: Any) -> dict[str, Any]:
    """INSERT one row of `model` into a SQLite database through the raw connection, inside the
    caller's transaction; return the row as stored, `{column: value}`, primary key included.

    For the run writer's critical section: no model instance, no ORM cursor wrappers, and the
    row comes back without a SELECT (the audit trail records it as stored). Values are
    attnames; fields not given take their defaults (callable ones are computed per row).
    Database errors are Django's, as through a cursor.
    """
    plan = _plans.get(model) or _plans.setdefault(model, _Plan(model))
    connection = connections[using]
    if not plan.attnames.issuperset(values):
        raise TypeError(f"{model.__name__} has no fields {sorted(set(values) - plan.attnames)}.")
    defaults = plan.defaults(connection)
    row: dict[str, Any] = {}
    for field, attname, column, kind in plan.columns:
        if attname in values:
            value = _stored_value(field, kind, values[attname], connection)
        elif attname in defaults:
            value = defaults[attname]
        else:
            value = _stored(field.get_db_prep_save(field.get_default(), connection))
        row[column] = value
    with raw_connection(using) as raw:
        row[str(plan.pk.column)] = raw.execute(plan.sql, list(row.values())).fetchone()[0]
    return row


def update_stored(
    model: type[Model],
    *,
    using: str,
    where: str,
    params: list[Any],
    extra_set: str = "",
    **values: Any,
) -> dict[str, Any] | None:
    """UPDATE the row of `model` matching `where` (SQL on its columns, `?` placeholders bound to
    `params`) through the raw connection, inside the caller's transaction; return the row as
    stored afterwards, `{column: value}` (`RETURNING *`), or None when no row matched.

    `insert_stored`'s counterpart for the run writer's conditional transitions: one statement,
    no SELECT before or after. `values` are attnames prepared through their fields; `extra_set`
    adds raw assignments (`"attempts" = "attempts" + 1`). `where` and `extra_set` are constant
    SQL of the caller: `where` pins one row (its primary key), `extra_set` binds nothing.
    """
    meta = model._meta
    connection = connections[using]
    fields = {f.attname: f for f in meta.concrete_fields}
    unknown = set(values) - set(fields)
    if unknown:
        raise TypeError(f"{model.__name__} has no fields {sorted(unknown)}.")
    assignments = [f'"{fields[name].column}" = ?' for name in values]
    if extra_set:
        assignments.append(extra_set)
    sql = f'UPDATE "{meta.db_table}" SET {", ".join(assignments)} WHERE {where} RETURNING *'
    prepared = [
        _stored_value(fields[name], _KINDS.get(fields[name].get_internal_type()), value, connection)
        for name, value in values.items()
    ]
    with raw_connection(using) as raw:
        cursor = raw.execute(sql, prepared + list(params))
        stored = cursor.fetchone()
        if stored is None:
            return None
        names = [column[0] for column in cursor.description]
    reals = _real_columns(model)
    row = {}
    for name, value in zip(names, stored, strict=True):
        if isinstance(value, datetime):
            value = str(value)  # Django's connection parses datetimes: give back the stored text
        elif name in reals and type(value) is int:
            value = float(value)  # RETURNING gives a whole REAL as an integer, SELECT does not
        row[name] = value
    return row


@functools.cache
def _real_columns(model: type[Model]) -> frozenset[str]:
    return frozenset(
        str(f.column) for f in model._meta.concrete_fields if f.get_internal_type() == "FloatField"
    )


def instance_from_stored(model: type[M], *, using: str, row: dict[str, Any]) -> M:
    """The instance of `model` for a row as stored (`insert_stored`, `update_stored`), its values
    converted through the backend's and the fields' converters as a queryset converts them."""
    columns = _columns(model, tuple(row))
    return _instance(model, using, columns, list(row.values()))


def fetch_one(model: type[M], sql: str, params: list[Any]) -> M | None:
    """The first row of `SELECT *`-style `sql` as an instance of `model`, converted through its
    fields as a queryset would, read from the database the router gives for `model`.

    For lookups on request paths (an API key, a run, a tool call), where the ORM's compiler,
    and even `Manager.raw()`'s column mapping, cost more than the query itself: a request to a
    tenant that no memo knows pays three or four of them.
    """
    using = router.db_for_read(model)
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            return None
        names = tuple(column[0] for column in cursor.description)
    return _instance(model, using, _columns(model, names), list(row))


@functools.cache
def _columns(model: type[Model], names: tuple[str, ...]) -> tuple[tuple[int, Any, Any], ...]:
    """For each concrete field of `model` among the columns `names`, in the model's field order
    (the order `Model.from_db` expects, which need not be the table's): the column's index in
    `names`, the field and its column expression."""
    index = {name: i for i, name in enumerate(names)}
    by_column = {str(f.column) for f in model._meta.concrete_fields}
    unknown = [name for name in names if name not in by_column]
    if unknown:
        raise TypeError(f"{model.__name__} has no columns {unknown}.")
    return tuple(
        (index[str(f.column)], f, f.get_col(model._meta.db_table))
        for f in model._meta.concrete_fields
        if str(f.column) in index
    )


def _instance(
    model: type[M], using: str, columns: tuple[tuple[int, Any, Any], ...], row: list[Any]
) -> M:
    connection = connections[using]
    names, values = [], []
    for index, field, col in columns:
        value = row[index]
        if value is not None:
            for convert in (
                *connection.ops.get_db_converters(col),
                *field.get_db_converters(connection),
            ):
                value = convert(value, col, connection)
        names.append(field.attname)
        values.append(value)
    return model.from_db(using, names, values)


def by_pk(model: type[M], pk: Any) -> M | None:
    """The row of `model` with primary key `pk`, through `fetch_one`."""
    return fetch_one(model, _by_pk_sql(model), [pk])


@functools.cache
def _by_pk_sql(model: type[Model]) -> str:
    return f'SELECT * FROM "{model._meta.db_table}" WHERE "{model._meta.pk.column}" = %s'
