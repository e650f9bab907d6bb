"""Grids: how the ServerApp's messages reach the clients.

Flower's strategies talk to clients only through a `Grid`. `InProcessGrid` is hone's
one-machine engine: it hands each message to the ClientApp in this very process, one
client after another, each node with its own Flower `Context` (node config
`partition-id`/`num-partitions`, as Flower's simulation gives them). `OrderedGrid` wraps
any grid (Flower's deployment one, the Ray simulation's) so that nodes are listed and replies
returned in a fixed order: sampling and the floating-point sums of aggregation then do not
depend on which client happened to answer first.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from hone.federate import protocol as p

# Node ids of the in-process clients: any distinct integers but the server's would do.
FIRST_NODE_ID = SUPERLINK_NODE_ID + 1


class InProcessGrid(Grid):
    """`num_clients` nodes running `client_app` in this process, in node order."""

    def __init__(self, client_app: ClientApp, num_clients: int, run_id: int = 1) -> None:
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        # This grid is the runtime: Flower's messages take their sender from the process's
        # task identity, which its own runtimes set before they start a ServerApp.
        TaskIdentity.task_id, TaskIdentity.run_id = 1, run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self.contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + i,
                node_config={p.PARTITION_ID: i, p.NUM_PARTITIONS: num_clients},
                state=RecordDict(),
                run_config={},
            )
            for i in range(num_clients)
        }
        self._replies: dict[str, Message] = {}
        self._ids = itertools.count(1)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run each message's client now; its reply waits to be pulled. An exception in a
        client propagates: in one process a user's mistake is reported as such."""
        ids = []
        for message in messages:
            message_id = str(next(self._ids))
            context = self.contexts[message.metadata.dst_node_id]
            self._replies[message_id] = self.client_app(message, context)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


class OrderedGrid(Grid):
    """Another grid, with its node ids sorted and replies in the order of the messages."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.inner.get_node_ids())

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        order = {m.metadata.dst_node_id: i for i, m in enumerate(messages)}
        replies = self.inner.send_and_receive(messages, timeout=timeout)
        return sorted(replies, key=lambda r: order.get(r.metadata.src_node_id, len(order)))
