"""The Stock Trend Pipeline's shared package, in three layers (enforced by ``tests/unit/test_layers.py``).

``helpers.core``
    Pure domain, standard library only: the quote model and its validation (``quotes``), the one
    crossover definition (``indicators``), the storage layout (``layout``: S3 keys, partitions,
    Glue columns), the processor's and trend Lambda's batch planning (``batch_plan``,
    ``trend_plan``) and the one exception hierarchy (``errors``).
``helpers.pipeline``
    What runs inside the Lambda functions (standard library and boto3): settings (``config``),
    the client factory (``aws``), the resource registry (``resources``), the processor, the trend
    evaluation and the Glue catalog. ``deploy/package.py`` ships exactly the modules a handler
    imports.
``helpers.notebook``
    What the notebooks call (pandas, matplotlib, pyathena allowed): quote sources, the producer,
    readers of the stores, Athena access and its SQL, analysis, charts, the doctor and the run
    report.

``python -m helpers.config`` prints the resolved settings. Importing any module has no side
effects; import the module you need.
"""
