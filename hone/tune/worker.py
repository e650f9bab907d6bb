"""`python -m hone.tune.worker SPEC WORKER`: one worker process of `hone tune --workers W`.

SPEC is the JSON of `TuneOptions`; errors are printed as `hone` prints them, so the parent
can pass a configuration error on as one line.
"""

from __future__ import annotations

import json
import sys

from hone.errors import UserError
from hone.tune.study import TuneOptions, run_worker


def main(argv: list[str]) -> int:
    spec, worker = argv
    try:
        run_worker(TuneOptions(**json.loads(spec)), int(worker))
    except UserError as e:
        print(f"hone: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
