"""Local Athena endpoint: Athena's JSON API executing SQL with DuckDB over Glue tables in S3.

Layout (moto's models/responses split): ``models`` holds workgroups and query executions,
``responses`` the wire format, ``engine`` runs statements, ``sql`` the Trino→DuckDB handling,
``formats`` Athena's types, values and result files, ``tables`` Glue and S3 access, and
``component`` plugs it into the local stack.
"""

from deploy.local.athena.component import AthenaComponent

__all__ = ["AthenaComponent"]
