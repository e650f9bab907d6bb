import sys

from hone.cli import main

code = main()
# A process that left a process group ends without the interpreter's teardown, which the
# group's worker threads can abort (hone.distributed.strategy.end_process).
strategy = sys.modules.get("hone.distributed.strategy")
if strategy is not None and strategy.left_process_group():
    strategy.end_process(code)
sys.exit(code)
