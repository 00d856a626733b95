"""
Loaded by the moto_server that test/helpers/moto.ts starts (PYTHONPATH names this folder; Python
imports `sitecustomize` at start). Three changes to moto 5's speed, none to what it answers:

1. TransactWriteItems: moto deep-copies the whole table once per item of the transaction, to put it
   back if the transaction is cancelled. Each transaction then costs the size of the table, and a
   test that fills a mailbox of 250 messages spent a minute and a half in those copies. Here the
   items the transaction names are copied instead (they are all in the request) and put back when
   it is cancelled: the same all-or-nothing outcome (moto sorts what it reads, so no order is lost).
   Unlike moto's own rollback, it does not also undo another request's write to another item
   meanwhile, as DynamoDB would not.
2. Each request lists moto's package directory to find its service (`list_of_moto_modules`, about
   1 ms a request, under a lock every request takes): the listing is read once.
3. Werkzeug's line per request on stderr: the helper keeps only the tail of stderr, for errors.

The changes are made only on moto 5, whose code they were written against; on another version this
prints one line to stderr and moto runs as installed (slower, and as correct).
"""

import copy
import logging
import sys
import threading

MARK = "mail-relay moto speed-ups"


def _apply():
    import moto
    from moto import backends
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    if not moto.__version__.startswith("5."):
        raise RuntimeError(f"written for moto 5, this is moto {moto.__version__}")

    # 3. No request log.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    # 2. The package listing, once.
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules

    # 1. The transaction's rollback by item.
    in_transaction = threading.local()
    missing = object()

    def table_deepcopy(self, memo):
        if getattr(in_transaction, "active", False):
            return self  # moto's whole-table backup: the items are kept by snapshot() instead
        result = self.__class__.__new__(self.__class__)
        memo[id(self)] = result
        result.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return result

    def snapshot(backend, transact_items):
        """Each item the transaction names, as it is now: a copy, or `missing`."""
        saved = []
        for request_item in transact_items:
            try:
                op = next(iter(request_item.values()))
                table = backend.tables.get(op.get("TableName"))
                if table is None:
                    continue
                key = op["Key"] if "Key" in op else op["Item"]
                hash_key = DynamoType(key[table.hash_key_attr])
                range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
                item = table.get_item(hash_key, range_key) if hash_key in table.items else None
            except Exception:
                continue  # a malformed item: moto refuses it before writing anything
            saved.append((table, hash_key, range_key, missing if item is None else copy.deepcopy(item)))
        return saved

    def restore(saved):
        # Backwards: an item named twice (which moto refuses) ends as it was first.
        for table, hash_key, range_key, item in reversed(saved):
            if range_key is None:
                if item is missing:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = item
            elif item is missing:
                table.items.get(hash_key, {}).pop(range_key, None)
            else:
                table.items[hash_key][range_key] = item

    transact_write_items = DynamoDBBackend.transact_write_items

    def transact_write_items_by_item(self, transact_items):
        saved = snapshot(self, transact_items)
        in_transaction.active = True
        try:
            return transact_write_items(self, transact_items)
        except BaseException:
            restore(saved)
            raise
        finally:
            in_transaction.active = False

    Table.__deepcopy__ = table_deepcopy
    DynamoDBBackend.transact_write_items = transact_write_items_by_item


try:
    _apply()
except Exception as err:  # moto runs as installed
    print(f"{MARK} not applied: {err}", file=sys.stderr, flush=True)
