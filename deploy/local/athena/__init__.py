"""Local Athena endpoint: Athena's JSON API executing SQL with DuckDB over Glue tables in S3.

Layout (moto's models/responses split): ``models`` holds the backend's state (the records in
``workgroups`` and ``executions``, the errors in ``exceptions``), ``responses`` the wire format,
``engine`` runs statements (``results`` what a run gives back, ``show`` the SHOW statements
answered from Glue), ``sql`` the Trino→DuckDB handling, ``formats`` Athena's types, values and
result files, ``tables`` Glue and S3 access, and ``component`` plugs it into the local stack.
"""

from deploy.local.athena.component import AthenaComponent

__all__ = ["AthenaComponent"]
