"""Who signed a request: the IAM user or assumed role behind an access key, checked by its signature.

Keys live in moto's stores, so they persist with the stack's state: an IAM user's keys
(``iam_backends[account]["aws"].access_keys``, each with its ``user_name``) and the temporary
keys of ``sts:AssumeRole`` (``sts_backends[account]["aws"].assumed_roles``, each with its
secret and session token). The signature is recomputed with botocore's own SigV4 signer over
the headers the request says it signed (as ``moto/iam/access_control.py`` does), so a wrong
secret or a stale session token is refused like on AWS. A principal's policies are its inline
and attached documents (a user's groups' included), read at every request: a policy changed
through the IAM API applies to the next request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["Principal", "SignatureError", "UnknownKey", "find", "parse_authorization", "verify_signature"]


class UnknownKey(Exception):
    """No user or assumed role holds the access key (or the session token does not match)."""


class SignatureError(Exception):
    """The request's signature is not the one its key's secret gives."""


@dataclass(frozen=True)
class Principal:
    arn: str
    kind: str  # "user" or "assumed-role"
    name: str  # the user's or the role's name
    account: str
    secret: str
    token: str | None = None

    def documents(self) -> list[str]:
        """The identity policies (JSON texts) attached to this principal, right now."""
        from moto.iam.models import iam_backends

        backend = iam_backends[self.account]["aws"]
        entity: Any
        if self.kind == "user":
            entity = backend.users.get(self.name)
            groups = [g for g in list(backend.groups.values()) if entity in g.users] if entity else []
        else:
            entity = next((r for r in list(backend.roles.values()) if r.name == self.name), None)
            groups = []
        if entity is None:
            return []
        docs = [*entity.policies.values(), *(_default(p) for p in entity.managed_policies.values())]
        for group in groups:
            docs += [*group.policies.values(), *(_default(p) for p in group.managed_policies.values())]
        return [str(d) for d in docs]


def _default(policy: Any) -> str:
    return str(next(v.document for v in policy.versions if v.is_default))


_roles_by_key: dict[str, Any] = {}
_roles_lock = threading.Lock()


def _assumed_role(account: str, key_id: str) -> Any:
    from moto.sts.models import sts_backends

    with _roles_lock:
        found = _roles_by_key.get(key_id)
        if found is None:
            for role in sts_backends[account]["aws"].assumed_roles:
                _roles_by_key.setdefault(role.access_key_id, role)
            found = _roles_by_key.get(key_id)
        return found


def find(key_id: str, token: str | None) -> Principal:
    """The principal holding ``key_id`` (with ``token`` for temporary keys)."""
    from moto.iam.models import get_account_id_from, iam_backends

    account = get_account_id_from(key_id)
    key = iam_backends[account]["aws"].access_keys.get(key_id)
    if key is None or getattr(key, "status", "Active") != "Active":
        raise UnknownKey(key_id)
    if key.user_name:
        if token is not None:
            raise UnknownKey(key_id)
        user = iam_backends[account]["aws"].users.get(key.user_name)
        if user is None:
            raise UnknownKey(key_id)
        return Principal(str(user.arn), "user", user.name, account, key.secret_access_key)
    role = _assumed_role(account, key_id)
    if role is None or token != role.session_token:
        raise UnknownKey(key_id)
    role_name = role.role_arn.split("/")[-1]
    arn = f"arn:aws:sts::{account}:assumed-role/{role_name}/{role.session_name}"
    return Principal(arn, "assumed-role", role_name, account, role.secret_access_key, role.session_token)


def parse_authorization(header: str) -> dict[str, str]:
    """``AWS4-HMAC-SHA256 Credential=K/D/R/S/aws4_request, SignedHeaders=a;b, Signature=X``."""
    _, _, rest = header.partition(" ")
    fields = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    scope = fields.get("Credential", "").split("/")
    if len(scope) == 5:
        fields.update(key=scope[0], date=scope[1], region=scope[2], service=scope[3])
    return fields


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    return headers


def verify_signature(
    environ: dict[str, Any], auth: dict[str, str], principal: Principal, body: bytes | None
) -> None:
    """Raise :class:`SignatureError` unless the request is signed with the principal's secret."""
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signed = auth.get("SignedHeaders", "").split(";")
    present = _headers(environ)
    headers = {name: present[name] for name in signed if name in present}
    uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
    if "?" not in uri and environ.get("QUERY_STRING"):
        uri += "?" + environ["QUERY_STRING"]
    request = AWSRequest(
        method=environ.get("REQUEST_METHOD", "GET"), url=uri, data=body or b"", headers=headers
    )
    request.context["timestamp"] = headers.get("x-amz-date", "")
    signer_cls = S3SigV4Auth if auth.get("service") == "s3" else SigV4Auth
    signer = signer_cls(
        Credentials(auth["key"], principal.secret, principal.token), auth["service"], auth["region"]
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != auth.get("Signature"):
        raise SignatureError(auth["key"])
