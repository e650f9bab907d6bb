"""Write the example fine-tuning data: train.jsonl and val.jsonl beside this script.

The task: put a word in square brackets. Each record is a conversation in the `messages`
format (docs/finetune.md), a user turn that asks for it and ends with the word, and the
assistant's answer, the word in brackets:

    {"messages": [{"role": "user", "content": "Put the word in brackets: tavo"},
                  {"role": "assistant", "content": "[tavo]"}]}

The words are made-up four-letter ones (consonant, vowel, consonant, vowel), none of them in
both files: a model that scores on val.jsonl has learned to copy the word into the format,
not the words themselves. Success is checkable by exact match (`hone eval RUN --generate`).
A tiny random model learns it through LoRA in seconds (tests/finetune/test_learning.py);
a pretrained instruct model needs only a few steps.

Seeded: running it again writes the same files, byte for byte.

    python examples/finetune/make_data.py            # 400 train, 50 validation records
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
# Different wordings of the same request: the word always comes last.
ASKS = (
    "Put the word in brackets: {word}",
    "Bracket this word: {word}",
    "Write it in square brackets: {word}",
)


def words(count: int, rng: random.Random) -> list[str]:
    """`count` different four-letter words, in the order drawn."""
    seen: dict[str, None] = {}
    while len(seen) < count:
        word = "".join(rng.choice(CONSONANTS if i % 2 == 0 else VOWELS) for i in range(4))
        seen.setdefault(word)
    return list(seen)


def record(word: str, rng: random.Random) -> dict[str, list[dict[str, str]]]:
    """One conversation: the request for `word`, and the answer."""
    return {
        "messages": [
            {"role": "user", "content": rng.choice(ASKS).format(word=word)},
            {"role": "assistant", "content": f"[{word}]"},
        ]
    }


def write_jsonl(path: Path, records: list[dict[str, list[dict[str, str]]]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=400, help="training records (400)")
    parser.add_argument("--val", type=int, default=50, help="validation records (50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(Path(__file__).parent), help="the folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    drawn = words(args.train + args.val, rng)
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", [record(w, rng) for w in drawn[: args.train]])
    write_jsonl(folder / "val.jsonl", [record(w, rng) for w in drawn[args.train :]])
    print(f"wrote {args.train} training and {args.val} validation records to {folder}")


if __name__ == "__main__":
    main()
