"""`hone chat RUN`: a conversation in the terminal with a model that has a chat template.

Each line read is a user message; the reply is printed as it is generated. The conversation
is hone.engine.chat's `Conversation`, which Python users get too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator
from typing import Any

from hone.errors import ConfigError

EXAMPLES = """examples:
  hone chat hf:HuggingFaceTB/SmolLM2-135M-Instruct
  hone chat runs/my-chat --system "Answer in one sentence." --temperature 0
  echo "What is gravity?" | hone chat CHECKPOINT      replies on stdout, nothing else there

In the chat: /reset starts over, /exit (or Ctrl-D) leaves, Ctrl-C stops a reply.
"""
HELP = "commands: /reset starts over, /exit (or Ctrl-D) leaves; Ctrl-C stops a reply"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "chat",
        help="chat in the terminal with a model that has a chat template",
        description="Chat with a language model through its chat template (a chat or "
        "instruct checkpoint, or a run trained from one), keeping the conversation's history.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run_dir",
        help="a run directory, or a Hugging Face checkpoint (a folder, or hf:ORG/NAME)",
    )
    p.add_argument("--system", default=None, help="a system message that opens the chat")
    p.add_argument(
        "--max-new-tokens", type=int, default=512, help="the longest reply, in tokens (512)"
    )
    p.add_argument(
        "--temperature", type=float, default=0.7, help="0.7; 0 picks the likeliest token"
    )
    p.add_argument(
        "--top-p", type=float, default=None, help="nucleus sampling mass (default: off, as 1.0)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="reply i samples with SEED + i: reproducible"
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hone.engine.chat import Conversation
    from hone.engine.inference import LoadedRun

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ConfigError(f"--temperature must be at least 0 (0: greedy), got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1] (1 keeps every token), got {args.top_p}")
    loaded = LoadedRun.load(args.run_dir, args.device)
    if not loaded.task.generates_text:
        raise ConfigError(f"{args.run_dir} is not a language model; there is no chatting with it")
    conversation = Conversation(loaded, args.system, name=args.run_dir)
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        print(f"hone chat: {args.run_dir}; {HELP}", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:  # Ctrl-D, or the end of piped input
            if interactive:
                print(file=sys.stderr)  # the shell's prompt on a line of its own
            break
        text = line.strip()
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            conversation.reset()
            print("hone chat: the conversation starts over", file=sys.stderr)
        elif text:
            _say(conversation.reply(text, args.max_new_tokens, args.temperature, None, args.seed, args.top_p))  # fmt: skip
    return 0


def _say(pieces: Generator[str, None, None]) -> None:
    """Print a reply as it comes; Ctrl-C ends the reply (what came of it is kept), not the
    chat."""
    try:
        for piece in pieces:
            print(piece, end="", flush=True)
    except KeyboardInterrupt:
        pieces.close()
        print(" [stopped]", end="", file=sys.stderr)
    print(flush=True)
