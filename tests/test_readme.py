"""Every code block of README.md is run, so that the README cannot drift from the code.

Blocks are taken from README.md as it is (nothing is copied here) and run as a reader would:

- ``bash`` blocks in a scratch folder holding the bundled ``samples/``, with ``.venv/bin`` on
  ``PATH`` (what ``source .venv/bin/activate`` gives) under ``set -euo pipefail``, so every line
  must succeed. A line that starts the service (``./scripts/serve``, ``diffall serve``) is run until
  its banner, then the banner's ``curl`` line is pasted, then the service is stopped with SIGTERM
  and must exit 0. ``./scripts/test`` is not run from inside the test suite (``.ci/run`` runs it).
- ``python`` blocks as scripts, in the same kind of folder;
- ``json`` blocks are parsed; ``text`` blocks are output or listings, not commands; a ``text``
  block marked ``output-of COMMAND`` must appear in what COMMAND prints.

Placeholders a reader would replace are replaced by real values of a live service started here
(``diffall serve``, the embedded default): the API key ``dfa_...``, the URL
``http://127.0.0.1:8000``, the batch id ``"9d2e..."``. A block the machine cannot run says why in
an HTML comment just above it (``<!-- readme-test: not-run: REASON -->``); there may be few.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.s3server import free_port
from tests.support.processes import KEY_LINE, Service, python_argv, service_env, start, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LANGUAGES = {"bash", "python", "json", "text"}
DIRECTIVE = re.compile(r"^<!-- readme-test: (?P<what>[a-z-]+)(?::| )\s*(?P<arg>.*?) -->$")
BANNER_END = "Press Ctrl+C to stop."
SERVE_LINE = re.compile(r"^(?P<indent>\s*)(?P<cmd>(?:\./scripts/serve|diffall serve))(?P<args>.*)$")
#: At most this many blocks may be left unrun (each says why).
MAX_NOT_RUN = 2
#: A webhook secret for the receiver example (``DIFFALL_WEBHOOK_SECRETS``).
RECEIVER_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass(frozen=True)
class Block:
    """One fenced block of README.md."""

    language: str
    code: str
    line: int  # the line of the opening fence (1-based)
    directive: str | None  # e.g. "not-run", "output-of"
    argument: str  # what follows the directive

    def __str__(self) -> str:
        return f"README.md:{self.line}:{self.language}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text``, each with the ``readme-test`` comment just above it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("```"):
            index += 1
            continue
        language = line[3:].strip()
        above = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        found = DIRECTIVE.match(above.strip())
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        assert end < len(lines), f"README.md:{index + 1}: a code block is not closed"
        blocks.append(
            Block(
                language=language,
                code="\n".join(lines[index + 1 : end]) + "\n",
                line=index + 1,
                directive=found.group("what") if found else None,
                argument=found.group("arg") if found else "",
            )
        )
        index = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def _of(language: str) -> list[Block]:
    return [b for b in BLOCKS if b.language == language and b.directive != "not-run"]


# -- what the README holds ---------------------------------------------------------------------


def test_every_block_says_what_it_is() -> None:
    assert len(BLOCKS) >= 10
    for block in BLOCKS:
        assert block.language in LANGUAGES, f"{block}: say bash, python, json or text"
        assert block.directive in (None, "not-run", "output-of"), block


def test_few_blocks_are_left_unrun_and_each_says_why() -> None:
    not_run = [b for b in BLOCKS if b.directive == "not-run"]
    assert len(not_run) <= MAX_NOT_RUN, [str(b) for b in not_run]
    for block in not_run:
        assert len(block.argument) > 20, f"{block}: say why it cannot run here"


def test_the_two_commands_come_first() -> None:
    first = BLOCKS[0]
    assert first.language == "bash" and first.line < 15
    commands = [line.split("#")[0].strip() for line in first.code.splitlines()]
    assert commands == ["./scripts/serve", "./scripts/test"]


@pytest.mark.parametrize("block", _of("json"), ids=str)
def test_json_blocks_parse(block: Block) -> None:
    json.loads(block.code)


# -- a live service for the blocks -----------------------------------------------------------


@dataclass
class Live:
    url: str
    key: str
    batch_id: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """``diffall serve`` (the embedded default) with one batch whose own webhook_url answers
    nothing, so that its deliveries are pending or failed, as in the README's example."""
    home = tmp_path_factory.mktemp("readme-live")
    port = free_port()
    env = service_env(
        {
            "DIFFALL_DATA_DIR": str(home / "data"),
            "DIFFALL_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        }
    )
    serve = start(
        "readme-serve",
        python_argv("-m", "diffall.cli", "serve", f"--port={port}", "--workers=1"),
        env=env,
        cwd=home,
        log_dir=home / "logs",
        capture_stdout=True,
    )
    try:
        wait_until(
            lambda: BANNER_END in "".join(serve.stdout_lines),
            timeout_s=90,
            what="the banner",
            services=[serve],
        )
        found = KEY_LINE.search("".join(serve.stdout_lines))
        assert found, serve.stdout_lines
        live = Live(url=f"http://127.0.0.1:{port}", key=found.group(1), batch_id="")
        live.batch_id = _batch_with_a_dead_webhook(live)
        yield live
    finally:
        _stop(serve)


def _stop(service: Service) -> None:
    if service.alive():
        os.killpg(service.process.pid, signal.SIGTERM)
        try:
            service.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait(10)


def _batch_with_a_dead_webhook(live: Live) -> str:
    headers = {"Authorization": f"Bearer {live.key}"}
    ids = []
    for name in ("reference.png", "candidate.jpg"):
        with (ROOT / "samples" / name).open("rb") as file:
            answer = httpx.post(
                f"{live.url}/v1/images", headers=headers, files={"file": file}, timeout=30
            )
        assert answer.status_code in (200, 201), answer.text
        ids.append(answer.json()["id"])
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    answer = httpx.post(
        f"{live.url}/v1/batches",
        headers=headers,
        json={"pairs": [{"a": ids[0], "b": ids[1]}], "webhook_url": dead},
        timeout=30,
    )
    assert answer.status_code in (200, 201, 202), answer.text
    batch_id = str(answer.json()["id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until batch.completed has a delivery to look at
        log = httpx.get(
            f"{live.url}/v1/webhook-deliveries",
            headers=headers,
            params={"subject_id": batch_id},
            timeout=10,
        ).json()
        if log["items"]:
            return batch_id
        time.sleep(0.5)
    raise AssertionError("the batch's webhook delivery never appeared")


def _scratch(tmp_path: Path, live: Live) -> Path:
    """A folder like a checkout's root where ``./scripts/serve`` runs: the samples, the
    installed ``.venv``, the lock's exports, the client's sources, and the service's kept key
    in ``diffall-data/local-api-key``; nothing of the checkout to overwrite."""
    for name in ("samples", ".venv", "requirements", "diffall"):
        (tmp_path / name).symlink_to(ROOT / name)
    data = tmp_path / "diffall-data"
    data.mkdir()
    (data / "local-api-key").write_text(live.key + "\n")
    return tmp_path


def _substitute(code: str, live: Live) -> str:
    return (
        code.replace("./scripts/", f"{ROOT}/scripts/")
        .replace("dfa_...", live.key)
        .replace("http://127.0.0.1:8000", live.url)
        .replace("http://localhost:8000", live.url)
        .replace('"9d2e..."', f'"{live.batch_id}"')
    )


def _env(tmp_path: Path, live: Live | None = None) -> dict[str, str]:
    env = service_env(
        {
            "DIFFALL_DATA_DIR": str(tmp_path / "diffall-data"),
            "DIFFALL_URL": live.url if live else "http://127.0.0.1:8000",
            "DIFFALL_WEBHOOKS__SECRET_KEYS": Fernet.generate_key().decode(),
            "DIFFALL_WEBHOOK_SECRETS": RECEIVER_SECRET,
        }
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str], block: Block) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, (
        f"{block} exited {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n"
        f"--- stderr\n{done.stderr[-4000:]}"
    )
    return done.stdout


# -- bash ----------------------------------------------------------------------------------------

#: Runs a command that starts the service until its banner, pastes the banner's curl line (it
#: must answer a comparison), then stops it with SIGTERM: it must exit 0.
SERVE_FUNCTION = r"""
readme_serve() {
  local log; log="$(mktemp)"
  "$@" >"$log" 2>&1 &
  local pid=$! tries=0
  until grep -q "Press Ctrl+C to stop." "$log"; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$tries" -gt 900 ]; then
      cat "$log" >&2; echo "readme: '$*' gave no banner" >&2
      kill -TERM "$pid" 2>/dev/null; return 1
    fi
    sleep 0.2; tries=$((tries + 1))
  done
  local line answer
  line="$(grep -m1 -E '^ +curl ' "$log")"
  answer="$(eval "$line")"
  echo "$answer" | jq -e '.id and .state' >/dev/null \
    || { echo "readme: the banner's curl line answered: $answer" >&2; kill -TERM "$pid"; return 1; }
  kill -TERM "$pid"
  wait "$pid" || { cat "$log" >&2; echo "readme: '$*' did not stop cleanly" >&2; return 1; }
}
"""


def _bash_script(code: str) -> str:
    lines = []
    for line in code.splitlines():
        command = line.split("#", 1)[0].strip()
        if command.startswith(("./scripts/test", f"{ROOT}/scripts/test")):
            lines.append(f": skipped, this is the test suite itself: {shlex.quote(command)}")
            continue
        serve = SERVE_LINE.match(line.split("  #", 1)[0].rstrip())
        if serve is None:
            serve = SERVE_LINE.match(
                line.split("  #", 1)[0].rstrip().replace(f"{ROOT}/scripts/", "./scripts/")
            )
            if serve is not None:
                line = line.replace(f"{ROOT}/scripts/", "./scripts/")
        if serve is not None:
            args = re.sub(r"\s--port[= ]\d+", "", serve.group("args"))
            cmd = serve.group("cmd").replace("./scripts/", f"{ROOT}/scripts/")
            lines.append(f"{serve.group('indent')}readme_serve {cmd}{args} --port {free_port()}")
            continue
        lines.append(line)
    return "set -euo pipefail\n" + SERVE_FUNCTION + "\n".join(lines) + "\n"


@pytest.mark.parametrize("block", _of("bash"), ids=str)
def test_bash_block_runs(block: Block, live: Live, tmp_path: Path) -> None:
    cwd = _scratch(tmp_path, live)
    script = cwd / "block.sh"
    script.write_text(_bash_script(_substitute(block.code, live)))
    _run(["bash", str(script)], cwd, _env(tmp_path, live), block)


def test_serve_lines_are_run_until_their_banner() -> None:
    script = _bash_script("./scripts/serve --port 8080 --workers 2   # more\n./scripts/test\n")
    assert "readme_serve " in script and "--port 8080" not in script
    assert ": skipped, this is the test suite itself" in script


# -- python --------------------------------------------------------------------------------------

#: Appended to a block that defines a FastAPI app ``app`` (the receiver example): a signed
#: delivery is accepted with 204, a forged one refused with 400.
RECEIVER_CHECK = """

from fastapi.testclient import TestClient as _TestClient
from standardwebhooks import Webhook as _Webhook
import datetime as _dt, json as _json

_body = _json.dumps({"type": "comparison.succeeded", "data": {"id": "c1"}})
_now = _dt.datetime.now(_dt.UTC)
_signature = _Webhook(SECRETS[0]).sign("msg_1", _now, _body)
_ok = {"webhook-id": "msg_1", "webhook-timestamp": str(int(_now.timestamp())),
       "webhook-signature": _signature, "content-type": "application/json"}
with _TestClient(app) as _client:
    for _route in app.routes:
        _path = getattr(_route, "path", "")
        if "POST" in getattr(_route, "methods", ()):
            assert _client.post(_path, content=_body, headers=_ok).status_code == 204
            _forged = dict(_ok, **{"webhook-signature": "v1,AAAA"})
            assert _client.post(_path, content=_body, headers=_forged).status_code == 400
            print("receiver checked at", _path)
"""


@pytest.mark.parametrize("block", _of("python"), ids=str)
def test_python_block_runs(block: Block, live: Live, tmp_path: Path) -> None:
    cwd = _scratch(tmp_path, live)
    code = _substitute(block.code, live)
    defines_app = re.search(r"^app\b.*FastAPI\(\)", code, re.MULTILINE) is not None
    if defines_app:
        code += RECEIVER_CHECK
    script = cwd / "block.py"
    script.write_text(code)
    out = _run([sys.executable, str(script)], cwd, _env(tmp_path, live), block)
    if defines_app:
        assert "receiver checked at" in out


# -- text: output samples -------------------------------------------------------------------------


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.directive == "output-of"], ids=str)
def test_output_blocks_are_what_the_command_prints(block: Block, tmp_path: Path) -> None:
    out = _run(
        shlex.split(block.argument.replace("./", f"{ROOT}/", 1)), ROOT, _env(tmp_path), block
    )
    printed = " ".join(out.split())  # the terminal wraps lines where it likes
    for line in block.code.splitlines():
        wanted = " ".join(line.split())
        if wanted and wanted != "...":
            assert wanted in printed, f"{block}: {line!r} is not in what it printed:\n{out}"
