"""hw-picollector on the operator's machine (the Ansible controller), never on a Pi.

- :mod:`.sites`: the sites workbook, checked (sheet, row, column) and imported into an inventory.
- :mod:`.freshness`: the freshness report: every Pi's status plus what Cassandra knows.
- :mod:`.schema`: the central database's keyspace, tables and per-Pi login roles.
- :mod:`.commands`: their ``hwpc`` commands, added to the runtime's through an entry point.
"""
