"""Insert registry rows without the ORM's per-instance machinery, for provisioning hot paths.

`Model.objects.create()` costs ~0.5 ms a row here (instance set-up, signals, save machinery)
against ~0.15 ms for the same INSERT; creating a tenant or a run inserts two rows. Column names,
defaults and value conversions still come from the model's fields, so the SQL cannot drift from
the schema. No signals are sent: do not use it for models that rely on them.
"""

from typing import Any, TypeVar

from django.db import connections
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
