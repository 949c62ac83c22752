"""Private parts of the local Lambda runtime (see :mod:`deploy.local.lambda_runtime`).

State lives in :mod:`.state` and :mod:`.models`; reading moto's streams in :mod:`.sources`;
the ESM loop in :mod:`.poller`; worker processes in :mod:`.workers` and :mod:`.pool`;
CloudWatch Logs in :mod:`.logs`; on-failure destinations in :mod:`.destinations`; the Invoke
API wire format in :mod:`.invoke_api`; the hooks that stop moto from invoking through Docker
in :mod:`.moto_hooks`.
"""
