"""The Stock Trend Pipeline's shared package, used by the notebooks and the Lambda functions.

Lambda-safe modules (standard library and boto3 only at import time): ``config``, ``aws``,
``errors``, ``quotes``, ``indicators``, ``processor``, ``trend``, ``catalog``. Notebook-side
modules (import pandas, matplotlib or pyathena): ``analysis``, ``charts``, ``athena``,
``history``, ``verify``, ``alerts``, ``sources``, ``producer``, ``doctor``, ``report``.

Importing this package has no side effects; import the module you need.
"""
