"""The DynamoDB catalog table and every repository on it.

- `keys`: the key layout (the only place a key, index or TTL name is spelled);
- `items`: the item codec and `Table` (client, name, errors worded once);
- `schema`: the table's definition, creation and description;
- `catalog`: `Catalog`, the backup records, holding the repositories below;
- `locks`, `verifications`, `replication_checks`, `alert_states`, `idempotency`.
"""

from drsentry.adapters.table.catalog import Catalog
from drsentry.adapters.table.schema import TableDescription, create_table, table_definition

__all__ = ["Catalog", "TableDescription", "create_table", "table_definition"]
