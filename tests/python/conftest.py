"""Fixtures for the confluent-kafka (librdkafka) tests: a real `strata serve`
process on free ports with a temporary data dir.

The binary is $STRATA_BIN, default target/debug/strata (relative to the repo).
"""

import os
import pathlib
import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
START_TIMEOUT = 60
STOP_TIMEOUT = 20
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
BOUND = re.compile(r"(kafka|admin) listener bound to (\S+)")
LISTENER = re.compile(r"^listener (\S+) \(\S+\) bound to (\S+)")


def strata_bin():
    path = pathlib.Path(os.environ.get("STRATA_BIN", "target/debug/strata"))
    if not path.is_absolute():
        path = REPO / path
    if not path.is_file():
        pytest.fail(f"strata binary not found at {path}: run `cargo build` first or set STRATA_BIN")
    return str(path)


class Broker:
    def __init__(self, workdir, extra_args=(), listen="127.0.0.1:0"):
        self.workdir = pathlib.Path(workdir)
        self.listen = listen
        self.data_dir = self.workdir / "data"
        self.extra_args = list(extra_args)
        self.proc = None
        self.bootstrap = None
        self.admin = None
        # Every Kafka listener by name, as bound.
        self.listeners = {}
        self.stdout_log = self.workdir / "stdout.log"
        self.stderr_log = self.workdir / "stderr.log"

    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        env["NO_COLOR"] = "1"
        cmd = [
            strata_bin(), "serve",
            "--data-dir", str(self.data_dir),
            *([] if "--listeners" in self.extra_args else ["--listen", self.listen]),
            "--admin-listen", "127.0.0.1:0",
            *self.extra_args,
        ]
        self._stderr = open(self.stderr_log, "ab")
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._stderr,
        )
        found = {}
        ready = threading.Event()

        def pump(stream):
            with open(self.stdout_log, "ab") as log:
                for raw in iter(stream.readline, b""):
                    log.write(raw)
                    log.flush()
                    line = ANSI.sub("", raw.decode("utf-8", "replace"))
                    listener = LISTENER.match(line)
                    if listener:
                        self.listeners[listener.group(1)] = listener.group(2)
                    m = BOUND.search(line)
                    if m and m.group(1) not in found:
                        found[m.group(1)] = m.group(2)
                        if len(found) == 2:
                            ready.set()
            ready.set()  # stdout closed: wake the waiter

        self._pump = threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True)
        self._pump.start()
        ready.wait(START_TIMEOUT)
        if len(found) < 2:
            self.kill()
            pytest.fail(
                f"strata did not print both 'bound to' lines within {START_TIMEOUT}s "
                f"(exit code {self.proc.returncode})\n{self.log_tail()}"
            )
        self.bootstrap = found["kafka"]
        self.admin = found["admin"]
        return self

    def stop(self):
        """SIGTERM; the broker must exit 0 within STOP_TIMEOUT seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"strata did not exit within {STOP_TIMEOUT}s of SIGTERM\n{self.log_tail()}")
        self._pump.join(5)
        self._stderr.close()
        assert code == 0, f"strata exited with {code} after SIGTERM\n{self.log_tail()}"

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self._pump.join(5)
            self._stderr.close()

    def wait_ready(self, timeout=START_TIMEOUT):
        """Polls the admin listener's /ready until it answers 200."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.admin}/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"strata not ready within {timeout}s\n{self.log_tail()}")

    def logs(self):
        text = ""
        for p in (self.stdout_log, self.stderr_log):
            if p.exists():
                text += ANSI.sub("", p.read_text("utf-8", "replace"))
        return text

    def error_lines(self):
        return [
            line for line in self.logs().splitlines()
            if " ERROR " in line or line.startswith("ERROR ") or "panicked at" in line
        ]

    def log_tail(self, n=60):
        out = []
        for p in (self.stdout_log, self.stderr_log):
            lines = p.read_text("utf-8", "replace").splitlines() if p.exists() else []
            out.append(f"----- last {min(n, len(lines))} lines of {p} -----")
            out.extend(ANSI.sub("", l) for l in lines[-n:])
        return "\n".join(out)


def serving(b):
    """A fixture's body for the started broker `b`: yields it, then stops it
    and fails the test if it logged an ERROR line; prints its log tail when
    anything fails, and kills it in the end."""
    try:
        yield b
        b.stop()
        errors = b.error_lines()
        assert not errors, "broker logged ERROR lines:\n" + "\n".join(errors)
    except BaseException:
        print(b.log_tail())
        raise
    finally:
        b.kill()


@pytest.fixture
def broker(tmp_path, request):
    yield from serving(Broker(tmp_path).start())


@pytest.fixture
def topic_name():
    def make(prefix):
        return f"{prefix}-{uuid.uuid4().hex[:8]}"
    return make
