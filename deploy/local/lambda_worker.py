"""One warm Lambda execution environment of the local stack (stdlib only; a child of the stack).

The stack's Lambda runtime starts this file as a script, isolated from the project::

    python -I -S -u lambda_worker.py <code_dir> <handler> <response_fd> <runtime_packages> <excluded_json> \
        [<stack_pid>]

``-I`` ignores ``PYTHONPATH`` and the user site and keeps the script's folder off ``sys.path``;
``-S`` leaves out site-packages. ``sys.path`` is the deployment package (the extracted zip, also
the working directory like ``/var/task``), then ``runtime_packages`` (links to boto3 and its
dependencies), then the standard library: matches the AWS runtime: only boto3 and its
dependencies besides the code, so a handler importing pandas fails here as it would on AWS.

Protocol, one JSON document per line:

* the worker writes ``{"type": "init", "ok": ..., "init_ms": ...}`` on ``response_fd`` once the
  handler module is imported (or failed to import, with an AWS-shaped ``error``);
* the stack writes an invocation on stdin: ``{"request_id", "event", "deadline_ms",
  "invoked_function_arn"}``; the worker answers ``{"type": "result", "ok", "payload" | "error",
  "duration_ms", "max_memory_mb"}`` on ``response_fd``;
* stdout and stderr are the function's log output (the stack reads them line by line and
  writes them to CloudWatch Logs); each invocation's output ends with a marker line. As in the
  AWS Python runtime, the root logger has one handler writing
  ``[LEVEL]\\t<time>Z\\t<request id>\\t<message>`` at level ``AWS_LAMBDA_LOG_LEVEL`` (default
  WARNING), and the lines of one multi-line record are joined with ``\\r``.

EOF on stdin (the stack went away) ends the worker. So does the stack's death while the worker
is busy in a handler, however the stack died (SIGKILL included): given ``stack_pid``, a daemon
thread compares ``os.getppid()`` with it every :data:`PARENT_CHECK_SECONDS` and ends the process
when they differ (the worker was re-parented), so no worker outlives its stack as an orphan.
``prctl(PR_SET_PDEATHSIG)`` is deliberately not used: Linux sends that signal when the *thread*
that forked the worker exits, and the stack starts workers from short-lived threads (an HTTP
request's, a poller's); measured, a warm worker got the signal 1 s after its spawning thread ended.
"""

from __future__ import annotations

import decimal
import importlib
import json
import logging
import os
import signal
import site
import sys
import threading
import time
import traceback
from typing import Any

END_MARKER = "\x00STP-END\x00"
PARENT_CHECK_SECONDS = 0.5
ORPHAN_EXIT_CODE = 137  # as if SIGKILLed with the stack
_REQUEST_ID = ""


def _exit_with_the_stack(stack_pid: int) -> None:
    """End this process as soon as its parent is no longer ``stack_pid`` (checked now, then every
    :data:`PARENT_CHECK_SECONDS` by a daemon thread): the stack died, however it died."""
    if os.getppid() != stack_pid:  # the stack died between fork and here
        os._exit(ORPHAN_EXIT_CODE)

    def watch() -> None:
        while os.getppid() == stack_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=watch, name="stack-watchdog", daemon=True).start()


class LambdaContext:
    """The ``context`` argument, with the attributes and method of the AWS Python runtime's."""

    def __init__(self, request_id: str, deadline_ms: int, invoked_function_arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb}])"
        )


class _LambdaLogHandler(logging.Handler):
    """Root handler of the AWS Python runtime: one stdout line per record, ``\\r`` inside."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.aws_request_id = _REQUEST_ID
            text = self.format(record).rstrip("\n").replace("\n", "\r")
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except Exception:  # pragma: no cover - logging must never break the function
            self.handleError(record)


def _setup_logging() -> None:
    logging.Formatter.converter = time.gmtime
    handler = _LambdaLogHandler()
    handler.setFormatter(
        logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s", "%Y-%m-%dT%H:%M:%S"
        )
    )
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    if level in logging.getLevelNamesMapping():
        root.setLevel(level)


def _error(message: str, error_type: str, stack: list[str] | None = None) -> dict[str, Any]:
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": _REQUEST_ID,
        "stackTrace": stack or [],
    }


def _load_handler(spec: str) -> Any:
    """Resolve ``module.function`` exactly like the AWS Python runtime, with its error types."""
    try:
        module_name, function_name = spec.rsplit(".", 1)
    except ValueError as err:
        raise _Fault("Runtime.MalformedHandlerName", f"Bad handler '{spec}': {err}") from None
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as err:
        raise _Fault("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {err}") from None
    except SyntaxError as err:
        trace = [f'  File "{err.filename}" Line {err.lineno}\n    {err.text}']
        raise _Fault(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {err}", trace
        ) from None
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise _Fault(
            "Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'"
        ) from None


class _Fault(Exception):
    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error = _error(message, error_type, trace)


def _exception_error() -> dict[str, Any]:
    etype, value, tb = sys.exc_info()
    frames = [f for f in traceback.extract_tb(tb) if not f.filename.endswith("lambda_worker.py")]
    return _error(str(value), etype.__name__ if etype else "Exception", traceback.format_list(frames))


def _log_error(error: dict[str, Any]) -> None:
    """The ``[ERROR] Type: message`` record the AWS runtime logs for an unhandled error."""
    head = f"[ERROR] {error['errorType']}"
    lines = [f"{head}: {error['errorMessage']}" if error.get("errorMessage") else head]
    if error.get("stackTrace"):
        lines.append("Traceback (most recent call last):")
        for element in error["stackTrace"]:
            lines.extend(element.rstrip("\n").splitlines())
    sys.stdout.write("\r".join(lines) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _max_memory_mb() -> int:
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the parent's)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    except Exception:  # pragma: no cover - not on every platform
        return 0


def _end_of_output(out: Any) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, f"{END_MARKER}{_REQUEST_ID}\n".encode())
    out.flush()


def main(argv: list[str]) -> int:
    global _REQUEST_ID
    if len(argv) > 6:
        _exit_with_the_stack(int(argv[6]))
    code_dir, handler_spec, response_fd, runtime_packages = argv[1], argv[2], int(argv[3]), argv[4]
    excluded = set(json.loads(argv[5]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stack decides when a worker ends
    stdlib = [p for p in sys.path if p and os.path.abspath(p) not in excluded]
    sys.path[:] = [code_dir, runtime_packages, *stdlib]
    site.setquit()  # exit(), quit() and help() exist on AWS; -S left them out
    site.sethelper()
    os.chdir(code_dir)
    out = os.fdopen(response_fd, "w", buffering=1, encoding="utf-8")
    _setup_logging()

    started = time.perf_counter()
    try:
        handler = _load_handler(handler_spec)
        init: dict[str, Any] = {"type": "init", "ok": True}
    except _Fault as fault:
        _log_error(fault.error)
        init = {"type": "init", "ok": False, "error": fault.error}
    except Exception:  # errors raised while importing the module body
        error = _exception_error()
        _log_error(error)
        init = {"type": "init", "ok": False, "error": error}
    init["init_ms"] = (time.perf_counter() - started) * 1000
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, f"{END_MARKER}init\n".encode())
    out.write(json.dumps(init) + "\n")
    if not init["ok"]:
        return 1

    for line in sys.stdin:
        request = json.loads(line)
        _REQUEST_ID = request["request_id"]
        context = LambdaContext(_REQUEST_ID, int(request["deadline_ms"]), request["invoked_function_arn"])
        started = time.perf_counter()
        try:
            result = handler(request["event"], context)
        except Exception:
            response: dict[str, Any] = {"type": "result", "ok": False, "error": _exception_error()}
        else:
            try:
                response = {
                    "type": "result",
                    "ok": True,
                    "payload": json.dumps(result, default=_json_default),
                }
            except (TypeError, ValueError) as err:
                error = _error(f"Unable to marshal response: {err}", "Runtime.MarshalError")
                response = {"type": "result", "ok": False, "error": error}
        response["duration_ms"] = (time.perf_counter() - started) * 1000
        response["max_memory_mb"] = _max_memory_mb()
        if not response["ok"]:
            _log_error(response["error"])
        _end_of_output(out)
        out.write(json.dumps(response) + "\n")
        _REQUEST_ID = ""
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
