"""The README and docs/ as written: every command of their shell blocks runs, and writes what it
says it writes (issue 29).

What is run: each line of a ```bash / ```sh / ```shell block (a line ending in `\\` goes on,
`#` lines are comments), each `$ ` line of a ```console block, and each ```python block as a
script. The commands of one `##` section run in order in one temp folder, as a reader would
type them from the repository's root, with the virtual environment's `bin` first on PATH and
`HONE_MAX_STEPS` set, so that a recipe that trains for minutes takes a few steps and a study
a few trials (hone/config/step_bound.py). Sections run side by side.

A command passes when it exits 0 and the files it names as its output exist: the values of
`--run-dir`, `--output`, `--deploy`, a `>` redirection, and `runs/...` paths in its comment;
`curl` must get an answer that is not an error.
A gate the docs describe may say no with exit code 1 instead (`EXIT_1_ALLOWED`).

What the test adds, each in one place:
- `NOT_RUN`: commands a test machine cannot run (a download, GPUs, several machines, a server
  nobody calls), with the reason; each is reported as a skipped test, and a test checks that
  every entry still matches a command of the docs.
- `GIVEN`: what the docs take as given (a finished run called `runs/my-run`, a `my.toml`),
  made once and copied into each section that names it without making it.
- Servers: `hone serve` (or any line ending in `&`) is started in the background; the next
  command waits until it answers GET /ready, and the servers stop when the section ends. Each
  gets a free port in place of the written one, in every later line of the section too, so
  that sections can run side by side.
- A command runs once, however often the docs repeat it; what it writes is then GIVEN.
- A plain `hone ...` line (no pipe, redirection or variable), servers included, one whose
  input is an `echo "..." |`, and a python block run as forks of a process that has already
  imported torch and hone (tests/forking.py), so that each does not pay the 3 to 5 CPU
  seconds of those imports again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import forking

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_STEPS = "2"
COMMAND_TIMEOUT_SECONDS = 180
SHELL_FENCES = {"bash", "sh", "shell", "console"}
PLAIN_HONE = r"hone [^|<>&;$`\\]*"  # a `hone` command without pipes, redirections or variables

# Commands a test machine cannot run, by the start of their text (blanks collapsed): why.
NOT_RUN: dict[str, str] = {
    "make train": "installs into .venv and trains 1000 steps: `hone train gpt-shakespeare-char` "
    "is run instead, in the Serving section",
    "make test": "the test suite itself",
    "make lint": "runs on the repository, not in a temp folder: CI runs it",
    "make bench": "a benchmark of minutes",
    "pip install": "a download from a package index",
    "hone train my.toml --nproc 8": "8 processes: a machine with 8 GPUs",
    "torchrun --nproc-per-node 8": "8 processes: a machine with 8 GPUs",
    "torchrun --nproc-per-node 4 train.py": "the reader's own script: "
    "tests/distributed/test_user_loader.py runs one with its own DataLoader on 2 processes",
    "srun ": "a SLURM cluster",
    "hone train my.toml \\ hone train my.toml": "two machines (their commands side by side)",
    "hone train gpt-7b.toml": "a 7B model on 8 or 64 GPUs",
    "hone train mlp-digits --log.mlflow=true --log.mlflow_uri=http://mlflow.internal:5000": (
        "an MLflow server on another machine"
    ),
    "mlflow ui": "a long-running UI server that needs the full mlflow package",
    "flower-superlink": "a SuperLink with TLS certificates: several machines",
    "flower-supernode": "SuperNodes of several machines",
    "createdb ": "a PostgreSQL server",
    "hone tune my.toml --trials 200 --workers 4 --study my-study": "a PostgreSQL server",
    "hone tune show my-study --storage postgresql": "a PostgreSQL server",
    "HONE_API_KEY=secret hone serve runs/my-run --host 0.0.0.0": (
        "listens on every interface: not opened by a test"
    ),
    "hone sample hf:": "downloads SmolLM2-135M from the Hugging Face Hub: the tests sample "
    "from a tiny local checkpoint instead (tests/pretrained/test_commands.py)",
    "hone train pretrained-text --data.path=notes.txt": "downloads SmolLM2-135M from the "
    "Hugging Face Hub: GIVEN trains runs/smol from a tiny local checkpoint instead",
    "hone chat hf:": "downloads SmolLM2-135M-Instruct from the Hugging Face Hub and waits "
    "for a person: tests/pretrained/test_chat_api.py chats with a tiny local checkpoint",
    "hone serve hf:HuggingFaceTB/SmolLM2-135M-Instruct": "downloads SmolLM2-135M-Instruct: "
    "tests/pretrained/test_chat_api.py serves chats from a tiny local checkpoint",
    "hone train smollm2-135m-lora --run-dir runs/chat": "downloads SmolLM2-135M-Instruct: "
    "GIVEN trains runs/chat from a tiny random chat checkpoint instead",
    "hone train smollm2-135m-lora --data.path=my-train.jsonl": "downloads "
    "SmolLM2-135M-Instruct and reads your files: tests/finetune/test_learning.py trains on "
    "the example task from a tiny local checkpoint",
    "hone tune smollm2-135m-lora": "downloads SmolLM2-135M-Instruct: "
    "tests/finetune/test_learning.py tunes rank, alpha and lr on a tiny local checkpoint",
    'from openai import OpenAI client = OpenAI(base_url="http://localhost:8000/v1"': (
        "a client of the chat server above, which is not started"
    ),
    "class CompressionMethod:": "a sketch of an interface, not a script",
    "trainer = Trainer(": "a fragment: goes on from the block above",
    'import hone run = hone.load_run("runs/mlp-digits-..."': (
        "a fragment: placeholders for a run and its rows"
    ),
    "import lightning as L": "Lightning's code, for comparison: not a dependency of hone",
    'import os os.environ["KERAS_BACKEND"]': "Keras's code, for comparison: not a dependency",
}

# What the docs take as given: a path, and the commands that make it, in two chains made side
# by side (in one folder, each command after those above it).
GIVEN: list[dict[str, list[str]]] = [
    {
        "my.toml": ["hone config show mlp-digits > my.toml"],
        "mlp-digits.toml": ["hone config show mlp-digits > mlp-digits.toml"],
        "runs/my-run": [
            "hone train mlp-digits --run-dir runs/my-run",
            "hone export runs/my-run --format onnx",
            "hone export runs/my-run --format safetensors",
        ],
        "runs/my-run-int8": ["hone compress runs/my-run --quantize int8"],
        "bundle": ["hone export runs/my-run --format safetensors --output bundle/"],
        "runs/a": ["hone train mlp-digits --run-dir runs/a"],
        "runs/b": ["hone train mlp-digits --run-dir runs/b --optim.lr=1e-2"],
        "runs/c": ["hone train mlp-digits --run-dir runs/c --model.width=64"],
    },
    {
        "runs/my-gpt": ["hone train gpt-shakespeare-char --run-dir runs/my-gpt"],
        "gpt-bundle": ["hone export runs/my-gpt --format safetensors --output gpt-bundle"],
        "tune/mlp-digits": ["hone tune mlp-digits --trials 2"],
        "runs/mlp-digits-federated-20261130T1200Z": [
            "hone federate mlp-digits --run-dir runs/mlp-digits-federated-20261130T1200Z"
        ],
    },
    {
        # docs/pretrained.md's runs/smol continues SmolLM2-135M, a download: here a tiny
        # Llama with a BPE tokenizer, trained by hone and exported as a Hugging Face
        # checkpoint, stands in for it.
        "runs/smol": [
            "hone train gpt-shakespeare-char --model.name=llama --model.n_layer=1 "
            "--model.n_head=2 --model.n_embd=32 --model.block_size=64 --data.name=text "
            "--data.path=notes.txt --data.tokenizer=bpe --data.bpe_vocab_size=300 "
            "--run-dir runs/tiny-llama",
            "hone export runs/tiny-llama --format hf --output tiny-checkpoint",
            "hone train pretrained-text --model.path=tiny-checkpoint --data.path=notes.txt "
            "--model.block_size=32 --train.batch_size=4 --run-dir runs/smol",
        ],
        "smol-notes": ["hone export runs/smol --format hf --output smol-notes"],
    },
    {
        # README's and docs/finetune.md's runs/chat fine-tunes SmolLM2-135M-Instruct, a
        # download: here LoRA on a tiny random chat checkpoint, on the example task.
        "runs/chat": [
            f"python {ROOT}/examples/finetune/tiny_checkpoint.py tiny-chat",
            "hone train smollm2-135m-lora --model.path=tiny-chat --model.block_size=128 "
            f"--data.path={ROOT}/examples/finetune/train.jsonl "
            f"--data.val_path={ROOT}/examples/finetune/val.jsonl --run-dir runs/chat",
        ],
    },
]
# new.csv for `hone predict`: rows of 64 pixels, as the digits runs take them (the README's 0).
DIGIT = "0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0"
# notes.txt: "your text" for docs/pretrained.md's fine-tuning.
NOTES = (
    "Gravity is the attraction between masses. The apple falls because the earth pulls it.\n"
    "The moon keeps falling around the earth, and the earth around the sun.\n"
)
GIVEN_FILES = {
    "new.csv": ",".join(f"pixel_{i}" for i in range(64)) + f"\n{DIGIT}\n{DIGIT}\n",
    "notes.txt": NOTES * 40,
}
COPIED_FROM_THE_REPOSITORY = ["examples"]

# Gates that exit 1 when their check fails (the README's table of exit codes), and what they
# print then: a few steps of training leave a model that doctor finds fault with and that
# loses more than `--max-drop` (default 1 point) when pruned.
EXIT_1_ALLOWED = {
    "hone doctor": "",  # exit 1: not healthy
    "hone compress": r"over --max-drop .* nothing written",
}


@dataclass
class Command:
    document: str
    line: int
    section: str
    text: str
    python: bool = False

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


@dataclass
class Section:
    document: str
    title: str
    commands: list[Command] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.document}#{self.title}"


def extract(path: Path, name: str = "") -> list[Command]:
    """The commands of a markdown file's shell blocks, and its python blocks as scripts."""
    name = name or path.relative_to(ROOT).as_posix()
    commands: list[Command] = []
    section, fence, pending, start = "", None, "", 0
    python: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fenced = line.lstrip().startswith("```")  # indented in a list item, too
        if fence is None:
            if line.startswith("## "):
                section = line[3:].strip()
            elif fenced:
                fence, start, python = line.lstrip()[3:].strip(), number + 1, []
            continue
        if fenced:
            if fence == "python":
                commands.append(Command(name, start, section, "\n".join(python), python=True))
            fence = None
        elif fence == "python":
            python.append(line)
        elif fence in SHELL_FENCES:
            text = line.strip()
            if fence == "console" and not pending:
                if not text.startswith("$ "):
                    continue  # output
                text = text[2:]
            if not pending and (not text or text.startswith("#")):
                continue
            if not pending:
                start = number
            if text.endswith("\\"):
                pending += text[:-1].rstrip() + " "
                continue
            commands.append(Command(name, start, section, pending + text))
            pending = ""
    return commands


def split_comment(text: str) -> tuple[str, str]:
    """(the command, its trailing `# comment`)."""
    match = re.search(r"\s#\s", text)
    return (text[: match.start()].strip(), text[match.end() :]) if match else (text.strip(), "")


def outputs(text: str) -> list[str]:
    """The relative paths a command says it writes."""
    code, comment = split_comment(text)
    words = shlex.split(code.removesuffix("&"))
    paths = [
        words[i + 1]
        for i, word in enumerate(words[:-1])
        if word in ("--run-dir", "--output", "--deploy", ">")
    ]
    paths += [w.rstrip(":,);") for w in comment.split() if re.match(r"runs/\w", w)]
    return [p.rstrip("/") for p in paths if not p.startswith("/")]


def not_run_reason(command: Command) -> str | None:
    text = " ".join(command.text.split())
    return next((why for start, why in NOT_RUN.items() if text.startswith(start)), None)


def sections() -> list[Section]:
    """Every document's runnable commands by `##` section."""
    seen: set[str] = set()
    result: dict[str, Section] = {}
    for path in DOCUMENTS:
        for command in extract(path):
            key = " ".join(split_comment(command.text)[0].split())
            if not_run_reason(command) or key in seen:
                continue
            seen.add(key)
            section = Section(command.document, command.section or "top")
            result.setdefault(section.name, section).commands.append(command)
    return list(result.values())


# --- Running commands ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Shell:
    """One folder's commands in order: its servers, its port substitutions, its timings."""

    folder: Path
    env: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    ports: dict[str, str] = field(default_factory=dict)
    servers: list[tuple[subprocess.Popen[bytes] | forking.Forked, Path]] = field(
        default_factory=list
    )

    @property
    def logs(self) -> Path:
        return self.folder.parent / ".fork-logs"  # beside the folder: `ls` there sees none

    def fork(
        self, argv: list[str], script: str = "", stdin: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`hone ARGV` or the python `script` in the folder, as a fork (tests/forking.py)."""
        timeout = COMMAND_TIMEOUT_SECONDS
        try:
            return forking.run(argv, self.folder, self.env, self.logs, timeout, script, stdin)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, -9, "", "timed out")

    def substitute(self, text: str) -> str:
        for written, port in self.ports.items():
            text = re.sub(rf"(?<=[:= ]){written}\b", port, text)
        return text

    def run(self, command: Command) -> str | None:
        """Run one command; None when it did what it says, else what went wrong."""
        code = split_comment(command.text)[0]
        if not command.python and re.search(r"&$|^hone serve ", code):
            return self.start_server(code.removesuffix("&").strip())
        started = time.perf_counter()
        if command.python:
            script = self.folder / f".block-{command.line}.py"
            script.write_text(self.substitute(command.text))
            done = self.fork([], script=script.name)
        elif re.fullmatch(PLAIN_HONE, code):
            done = self.fork(shlex.split(code)[1:])
        elif echoed := re.fullmatch(rf'echo ("[^"$`\\]*") \| ({PLAIN_HONE})', code):
            stdin = self.folder.parent / f".stdin-{self.folder.name}-{command.line}"
            stdin.write_text(shlex.split(echoed.group(1))[0] + "\n")
            done = self.fork(shlex.split(echoed.group(2))[1:], stdin=stdin)
        else:
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", self.substitute(command.text)],
                cwd=self.folder,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_SECONDS,
            )
        self.seconds[command.where] = time.perf_counter() - started
        if done.returncode == 0 and code.startswith("curl "):  # -s exits 0 on HTTP errors too
            answered = done.stdout.strip() and not re.match(r'\{"(error|detail)"', done.stdout)
            return None if answered else f"answered {done.stdout[:2000]!r}"
        if done.returncode == 0:
            missing = [p for p in outputs(command.text) if not (self.folder / p).exists()]
            return f"did not write {', '.join(missing)}" if missing else None
        if gate_said_no(command.text, done):
            return None  # and wrote nothing
        return f"exit code {done.returncode}: {done.stderr[-3000:]}"

    def start_server(self, code: str) -> str | None:
        """Start a background command; for `hone serve`, wait until /ready answers 200."""
        serve = code.startswith("hone serve ")
        if serve:
            match = re.search(r"--port[ =](\d+)", code)
            written = match.group(1) if match else "8000"
            if written != "0":
                self.ports[written] = str(_free_port())
                code += "" if match else f" --port {written}"
        process: subprocess.Popen[bytes] | forking.Forked
        if re.fullmatch(PLAIN_HONE, code):
            process = forking.Forked(
                shlex.split(self.substitute(code))[1:], self.folder, self.env, self.logs
            )
            stderr = process.err
        else:
            stderr = self.folder / f".server-{len(self.servers)}.log"
            process = subprocess.Popen(
                ["bash", "-c", self.substitute(code)],
                cwd=self.folder,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=stderr.open("wb"),
                start_new_session=True,
            )
        self.servers.append((process, stderr))
        return self.wait_until_ready(process, stderr) if serve else None

    def wait_until_ready(
        self, process: subprocess.Popen[bytes] | forking.Forked, stderr: Path
    ) -> str | None:
        deadline = time.monotonic() + COMMAND_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            exited = process.poll() is not None
            said = stderr.read_text() if stderr.exists() else ""  # a fork opens it itself
            if exited:
                return f"exited with {process.returncode}: {said[-2000:]}"
            found = re.search(r"on (http://\S+) \(workers", said)
            try:
                if found:
                    with urllib.request.urlopen(f"{found.group(1)}/ready", timeout=2) as reply:
                        if reply.status == 200:
                            return None
            except OSError:
                pass
            time.sleep(0.05)
        return "did not answer GET /ready in time"

    def stop_servers(self) -> None:
        for process, _ in self.servers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self.servers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def gate_said_no(text: str, done: subprocess.CompletedProcess[str]) -> bool:
    """Whether a nonzero exit is a gate of EXIT_1_ALLOWED saying no, not a failure."""
    if done.returncode != 1 or "Traceback (most recent call last)" in done.stderr:
        return False
    said = done.stdout + done.stderr
    return any(k in text and re.search(said_so, said) for k, said_so in EXIT_1_ALLOWED.items())


def run_commands(commands: list[Command], shell: Shell) -> list[str]:
    """Run commands in order; the failures, each with where and why."""
    failures = []
    try:
        for command in commands:
            problem = shell.run(command)
            if problem:
                failures.append(f"{command.where}: {command.text}\n  {problem}")
    finally:
        shell.stop_servers()
    return failures


def taken_as_given(section: Section) -> list[str]:
    """The paths of GIVEN, GIVEN_FILES and COPIED_FROM_THE_REPOSITORY that the section names
    and does not write itself."""
    text = "\n".join(c.text for c in section.commands)
    written = {p for c in section.commands for p in outputs(c.text)}
    names = [*(path for chain in GIVEN for path in chain), *GIVEN_FILES]
    return [
        name
        for name in [*names, *COPIED_FROM_THE_REPOSITORY]
        if re.search(rf"(?<![\w/.-]){re.escape(name)}(?![\w-])", text) and name not in written
    ]


def run_section(
    section: Section, folder: Path, stock: Path, env: dict[str, str], chains: list[Future]
) -> list[str]:
    """Once the GIVEN `chains` that make what the section takes as given are done, copy that
    in, then run its commands."""
    folder.mkdir(parents=True)
    names = taken_as_given(section)
    for chain, future in zip(GIVEN, chains, strict=True):
        if set(chain) & set(names) and future.result():
            return ["not run: what it takes as given failed"]
    for name in names:
        source = ROOT / name if name in COPIED_FROM_THE_REPOSITORY else stock / name
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, folder / name)
        else:
            shutil.copy(source, folder / name)
    shell = Shell(folder, env)
    failures = run_commands(section.commands, shell)
    (folder / "seconds.json").write_text(json.dumps(shell.seconds))
    return failures


def expected_cost(section: Section) -> int:
    """A rough order of the sections' run times: a command, and four more for a study or for
    processes of its own (`--workers`, `--nproc`), which take longest."""
    return sum(
        1 + 4 * ("hone tune " in c.text) + 4 * bool(re.search(r"--workers|--nproc", c.text))
        for c in section.commands
    )


def make_given(chain: dict[str, list[str]], folder: Path, env: dict[str, str]) -> list[str]:
    lines = [line for commands in chain.values() for line in commands]
    shell = Shell(folder, env)
    return run_commands([Command("GIVEN", i, "", line) for i, line in enumerate(lines)], shell)


SECTIONS = sections()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Every section's failures; the timings printed (`pytest -s` shows them)."""
    root = tmp_path_factory.mktemp("readme")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HONE_MAX_STEPS": MAX_STEPS,
        "HONE_CACHE_DIR": str(root / "cache"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "MPLBACKEND": "Agg",
        # One thread a command: sections run side by side, and two OpenMP threads per tiny
        # operation spin against each other (docs/federated.md measured 19x).
        "OMP_NUM_THREADS": "1",
    }
    started = time.perf_counter()
    # Two sections a core: a command uses one core at most, and part of its time none (a
    # server starting, `--workers` processes importing torch, a reply awaited).
    workers = min(8, 2 * (os.cpu_count() or 1))
    stock = root / "stock"
    stock.mkdir()
    for name, text in GIVEN_FILES.items():
        (stock / name).write_text(text)
    with ThreadPoolExecutor(workers) as pool:
        # The chains first: a section waits in its thread for those it needs, which were
        # queued before it, so they run meanwhile.
        chains = [pool.submit(make_given, chain, stock, env) for chain in GIVEN]
        # The longest sections first: none of them is left running alone at the end.
        by_cost = sorted(enumerate(SECTIONS), key=lambda item: -expected_cost(item[1]))
        futures = {
            s.name: pool.submit(run_section, s, root / f"section-{i}", stock, env, chains)
            for i, s in by_cost
        }
        failed = [failure for chain in chains for failure in chain.result()]
        given_seconds = time.perf_counter() - started
        failures = {name: future.result() for name, future in futures.items()}
    assert not failed, "what the docs take as given:\n" + "\n".join(failed)
    seconds: dict[str, float] = {}
    for path in root.glob("section-*/seconds.json"):
        seconds.update(json.loads(path.read_text()))
    wall = time.perf_counter() - started
    print(
        f"\nREADME and docs: {wall:.1f} s ({given_seconds:.1f} s making what they take as "
        f"given); the slowest commands:"
    )
    slowest = sorted(seconds.items(), key=lambda item: -item[1])[:8]
    print("\n".join(f"{s:6.1f} s  {where}" for where, s in slowest))
    return failures


@pytest.mark.parametrize("section", SECTIONS, ids=[s.name for s in SECTIONS])
def test_commands_run_as_written(section: Section, results: dict[str, list[str]]) -> None:
    failures = results[section.name]
    assert not failures, "\n".join(failures)


UNRUNNABLE = [c for path in DOCUMENTS for c in extract(path) if not_run_reason(c) is not None]


@pytest.mark.parametrize("command", UNRUNNABLE, ids=[c.where for c in UNRUNNABLE])
def test_what_a_test_machine_cannot_run(command: Command) -> None:
    first_line = command.text.splitlines()[0][:80]
    pytest.skip(f"not run: `{first_line}`: {not_run_reason(command)}")


def test_the_list_of_unrunnable_commands_is_current() -> None:
    texts = [" ".join(c.text.split()) for path in DOCUMENTS for c in extract(path)]
    stale = [start for start in NOT_RUN if not any(t.startswith(start) for t in texts)]
    assert not stale, f"NOT_RUN names commands no document has any more: {stale}"


def test_extraction(tmp_path: Path) -> None:
    block = (
        "## Try\n\n```bash\nhone train a \\\n  --b=1   # comment\n# a comment\n\nhone eval r\n```\n"
        "```console\n$ hone runs\nout\n```\n```python\nprint(1)\n```\n"
    )
    path = tmp_path / "doc.md"
    path.write_text(block)
    found = extract(path, "doc.md")
    assert [(c.line, c.section, c.text, c.python) for c in found] == [
        (4, "Try", "hone train a --b=1   # comment", False),
        (8, "Try", "hone eval r", False),
        (11, "Try", "hone runs", False),
        (15, "Try", "print(1)", True),
    ]
    assert outputs("hone train x --run-dir runs/r > out.txt  # writes runs/r2/: all") == [
        "runs/r",
        "out.txt",
        "runs/r2",
    ]
