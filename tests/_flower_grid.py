"""An in-process Flower Grid for fast tests: delivers each message to a ClientApp
called directly (what Flower's simulation engine does in Ray actors), so the
strategy, the mods and the message flow are Flower's own. Not part of the package."""

import uuid

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid


class InProcessGrid(Grid):
    def __init__(self, client_app, num_nodes, run_id=7, node_config=None):
        self.client_app = client_app
        self.nodes = list(range(101, 101 + num_nodes))
        self.run_id = run_id
        self.contexts = {
            nid: Context(run_id=run_id, node_id=nid,
                         node_config={"partition-id": i, "num-partitions": num_nodes, **(node_config or {})},
                         state=RecordDict(), run_config={})
            for i, nid in enumerate(self.nodes)}
        self._run = None
        # Flower's runtime sets the process's task identity; Message() reads it
        from flwr.supercore.task_identity import TaskIdentity
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = 1
        TaskIdentity.task_id = 1
        self.fail = {}  # node id -> "drop" (error reply) or "vanish" (no reply)

    def set_run(self, run):
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return list(self.nodes)

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            msg.metadata.__dict__["_run_id"] = self.run_id
            msg.metadata.__dict__["_src_node_id"] = 1
            nid = msg.metadata.dst_node_id
            mode = self.fail.get(nid)
            if mode == "vanish":
                continue
            if mode == "drop":
                replies.append(Message(Error(code=0, reason="client dropped out"), reply_to=msg))
                continue
            replies.append(self.client_app(msg, self.contexts[nid]))
        return replies
