"""The local stack process: moto server plus the pipeline's own local services.

One WSGI server on 127.0.0.1 serves every AWS API the pipeline uses:

* moto handles Kinesis, DynamoDB (+Streams), S3, SNS, SQS, IAM, STS, Lambda (registry),
  Glue, CloudWatch Logs and EventBridge;
* components registered in :func:`default_components` run beside it in the same process
  (so they can read moto's in-memory state) and may claim requests, e.g. the Athena
  endpoint claims ``X-Amz-Target: AmazonAthena.*``; the Lambda runtime polls event
  source mappings in background threads;
* IAM (:mod:`deploy.local.access`) checks every AWS request first: the signer's key, the
  signature and the signer's policies (on unless ``--no-iam`` / ``STP_LOCAL_IAM=0``);
* every request it lets through is counted by caller and operation (:mod:`deploy.local.usage`,
  ``/_stp/usage``);
* the fault injector (:mod:`deploy.local.faults`) sits in front of all of them, off unless a
  plan is set (``--faults`` or ``PUT /_stp/faults``); off, it costs one attribute test.

Run it through ``python -m deploy.local up`` (background) or, in the foreground,
``python -m deploy.local.server --port 4566``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from deploy.local import access, aws_rules, moto_speed
from deploy.local import persist as persist_module
from deploy.local.faults import ADMIN_PATH, FaultInjector, load_spec, parse_plan
from deploy.local.persist import Persistence, changes_state
from deploy.local.usage import USAGE_PATH, Usage

log = logging.getLogger(__name__)

HEALTH_PATH = "/_stp/health"
SHUTDOWN_POLL_SECONDS = 0.05  # how soon the HTTP loop notices a stop
MOTO_SERVICES = (  # what the pipeline calls: imported before the server answers (LocalStack.start)
    "iam", "sts", "awslambda", "kinesis", "dynamodb", "dynamodbstreams", "s3", "sns", "sqs", "glue",
    "logs", "events",
)  # fmt: skip
SNAPSHOT_PATH = "/_stp/snapshot"  # POST: take a snapshot now (persistence on)
PERSIST_ENV = "STP_LOCAL_PERSIST"
SNAPSHOT_ENV = "STP_LOCAL_SNAPSHOT_SECONDS"
ADMIN_PREFIX = "/_stp/"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Component(Protocol):
    """A service living in the local stack process beside moto."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def health(self) -> dict[str, Any]: ...

    def handles(self, environ: dict[str, Any]) -> bool: ...

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]: ...


class Dispatcher:
    """Route a request through the fault injector (when a plan is set) to the first component
    that claims it, else to moto; ``/_stp/health`` and ``/_stp/faults`` are the stack's own."""

    def __init__(
        self,
        moto_app: WSGIApp,
        components: list[Component],
        health: Callable[[], dict[str, Any]],
        faults: FaultInjector | None = None,
        persistence: Persistence | None = None,
        gate: access.AccessGate | None = None,
    ):
        self.moto_app = moto_app
        self.components = components
        self.health = health
        self.faults = faults if faults is not None else FaultInjector()
        self.persistence = persistence
        self.gate = gate if gate is not None else access.AccessGate(enabled=False)
        self.usage = Usage()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(ADMIN_PREFIX):
            if path == HEALTH_PATH:
                body = json.dumps(self.health()).encode()
                start_response(
                    "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                )
                return [body]
            if path == ADMIN_PATH:
                return self.faults.admin(environ, start_response)
            if path == access.ADMIN_PATH:
                return self.gate.admin(environ, start_response)
            if path == SNAPSHOT_PATH and environ.get("REQUEST_METHOD") == "POST" and self.persistence:
                written = self.persistence.snapshot(fork=True, wait=True)
                body = json.dumps({"written": written, **self.persistence.describe()}).encode()
                start_response(
                    "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                )
                return [body]
            if path == USAGE_PATH:
                return self.usage.answer(start_response)
        if self.gate.enabled:
            refused = self.gate.check(environ)
            if refused is not None:
                status, headers, body = refused
                start_response(status, headers)
                return [body]
        self.usage.count(environ)
        if self.faults.plan is not None:
            return self.faults(environ, start_response, self.route)
        return self.route(environ, start_response)

    def route(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        for component in self.components:
            if component.handles(environ):
                return component(environ, start_response)
        persistence = self.persistence
        if persistence is None or not changes_state(environ):
            return self.moto_app(environ, start_response)
        with persistence.gate.request():  # a snapshot's cut never falls inside a change
            persistence.mark_request(environ)
            answer = self.moto_app(environ, start_response)
            try:
                return [b"".join(answer)]
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()


def default_components(stack: LocalStack) -> list[Component]:
    """The pipeline's own local services, in start order."""
    components: list[Component] = []
    try:
        from deploy.local.athena import AthenaComponent
    except ModuleNotFoundError as err:  # pragma: no cover - present once the Athena endpoint lands
        if err.name != "deploy.local.athena":
            raise
    else:
        components.append(AthenaComponent(stack))
    try:
        from deploy.local.lambda_runtime import LambdaRuntime
    except ModuleNotFoundError as err:  # pragma: no cover - present once the runtime lands
        if err.name != "deploy.local.lambda_runtime":
            raise
    else:
        components.append(LambdaRuntime(stack))
    return components


class LocalStack:
    """moto server and the pipeline's components behind one loopback endpoint."""

    def __init__(
        self,
        port: int = 4566,
        state_dir: str | Path = ".local",
        *,
        host: str = "127.0.0.1",
        region: str = "us-east-1",
        components: Callable[[LocalStack], list[Component]] = default_components,
        faults: dict[str, Any] | None = None,
        persist: bool = False,
        snapshot_seconds: float = persist_module.SNAPSHOT_SECONDS,
        iam: bool = False,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the local stack binds to loopback only, not {host!r}")
        self.host = host
        self.port = port
        self.region = region
        self.state_dir = Path(state_dir)
        self.started_at = 0.0
        self._components_factory = components
        self.components: list[Component] = []
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.faults = FaultInjector(parse_plan(faults) if faults else None)
        self.rules: dict[str, float] = {}  # deploy.local.aws_rules windows, set at start
        self.iam = iam
        self.gate: access.AccessGate | None = None
        # moto's state is the process's: only one stack in a process may keep it (the server's)
        self.persistence = Persistence(self.state_dir, snapshot_seconds=snapshot_seconds) if persist else None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        import importlib

        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        # moto's modules import each other in cycles: imported for the first time by two threads at
        # once (a request's service in a server thread, a component's start here), one thread can
        # see the other's half-initialised module ("cannot import name 'iam_backends'"), which
        # killed a stack at start. Import them here, before any request is served.
        for service in MOTO_SERVICES:
            importlib.import_module(f"moto.{service}.models")
            importlib.import_module(f"moto.{service}.urls")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        moto_speed.install()
        if self.persistence is not None:  # before the stack's own limits wrap Kinesis's puts
            self.persistence.restore_moto()
        self.rules = aws_rules.install()
        self.gate = access.install(self.iam)  # after the restore: the runner may exist already
        self.gate.start(self.state_dir, self.region)
        moto_app = DomainDispatcherApplication(create_backend_app)
        self.components = self._components_factory(self)
        if self.persistence is not None:
            for component in self.components:
                persisted = getattr(component, "persisted", None)
                if persisted is not None:
                    self.persistence.register(*persisted())
            self.persistence.restore_parts()
        app = Dispatcher(moto_app, self.components, self.health, self.faults, self.persistence, self.gate)
        self._server = make_server(self.host, self.port, app, threaded=True)
        self.port = self._server.server_address[1]  # resolves port 0 to the chosen one
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(SHUTDOWN_POLL_SECONDS,),
            name="local-stack-http",
            daemon=True,
        )
        self._thread.start()
        self.started_at = time.time()
        for component in self.components:
            component.start()
        if self.persistence is not None:
            self.persistence.start()
        log.info("local stack listening on %s with %s", self.endpoint, [c.name for c in self.components])

    def stop(self) -> None:
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", component.name)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.persistence is not None:
            self.persistence.close()
        log.info("local stack stopped")

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "pid": os.getpid(),
            "state_dir": str(self.state_dir.resolve()),
            "endpoint": self.endpoint,
            "region": self.region,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "components": {c.name: c.health() for c in self.components},
            "faults": self.faults.describe(),
            "iam": self.gate.describe() if self.gate else {"enabled": False},
            "aws_rules": {**self.rules, "answered": aws_rules.counters()},
            "persistence": self.persistence.describe() if self.persistence else {"enabled": False},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.server", description=__doc__)
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--state-dir", default=".local")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--faults", help="a fault plan: JSON text or a JSON file (see deploy.local.faults)")
    parser.add_argument(
        "--no-persist", action="store_true", default=os.environ.get(PERSIST_ENV, "1") == "0",
        help=f"keep state in memory only (default: saved under STATE_DIR/persist; {PERSIST_ENV}=0)",
    )  # fmt: skip
    parser.add_argument(
        "--snapshot-seconds", type=float, metavar="S",
        default=float(os.environ.get(SNAPSHOT_ENV, persist_module.SNAPSHOT_SECONDS)),
        help=f"seconds between snapshots while state changes ({SNAPSHOT_ENV})",
    )  # fmt: skip
    parser.add_argument(
        "--iam", action=argparse.BooleanOptionalAction, default=access.enabled_by_default(),
        help=f"enforce IAM: the runner's and the functions' policies (default on; {access.ENV}=0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--owner-pid", type=int, metavar="PID", help="stop (as on SIGTERM) when this process has ended"
    )
    parser.add_argument(
        "--owner-pdeathsig", action="store_true",
        help="with --owner-pid: the owner is our parent, started us from its main thread; ask Linux for "
        "SIGTERM when it dies",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    faults = load_spec(args.faults) if args.faults else None
    stack = LocalStack(
        args.port, args.state_dir, region=args.region, faults=faults,
        persist=not args.no_persist, snapshot_seconds=args.snapshot_seconds, iam=args.iam,
    )  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.owner_pid is not None:  # started by a runner: end with it, SIGKILL included
        from deploy.local import watch_owner

        watch_owner(args.owner_pid, stop, pdeathsig=args.owner_pdeathsig)
    stack.start()
    try:
        while not stop.wait(0.1):
            pass
    finally:
        stack.stop()
        pid_file = Path(args.state_dir) / "stack.pid"  # written by deploy.local.up: ours only if it says so
        try:
            if int(pid_file.read_text().strip()) == os.getpid():
                pid_file.unlink()
        except (OSError, ValueError):
            pass
    # Everything is stopped and saved: skip the interpreter's teardown of moto's and DuckDB's
    # objects (a second or more with a large state), which could only delay the exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
