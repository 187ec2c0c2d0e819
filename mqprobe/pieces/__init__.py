"""What runs as a process and measures: the node (a python-socketio server consuming from
RabbitMQ), the swarm (socket.io clients on mqprobe's own websocket), the publisher, the
faults a piece plants (inject), the runtime they share and the parent's handle on them
(process, piece), and the agent that runs pieces on another host."""
