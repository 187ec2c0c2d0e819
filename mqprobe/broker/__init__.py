"""RabbitMQ, as mqprobe meets it: reaching a broker (connect), running a throwaway one on
loopback (managed), removing what runs declared (cleanup), and watching its queues as
evidence during a run (sampler, and its Prometheus endpoint: prometheus); what a topology
file declares there (topology). The names commands and tests use are importable from
here."""

from mqprobe.broker.cleanup import (
    OUR_PREFIX,
    Leftover,
    delete_declared,
    leftovers,
    remove_declared,
    remove_leftovers,
)
from mqprobe.broker.connect import (
    BrokerError,
    check_management,
    check_reachable,
    connect_problem,
    default_management_url,
    management_get,
    redact_url,
)
from mqprobe.broker.managed import (
    INSTALL_HINT,
    BrokerState,
    ManagedBroker,
    broker_for,
    find_server_binary,
    free_port,
)
from mqprobe.broker.sampler import QueueSampler
from mqprobe.cpu import pid_alive

__all__ = [
    "INSTALL_HINT", "OUR_PREFIX", "BrokerError", "BrokerState", "Leftover", "ManagedBroker",
    "QueueSampler", "broker_for", "check_management", "check_reachable", "connect_problem",
    "default_management_url", "delete_declared", "find_server_binary", "free_port",
    "leftovers", "management_get", "pid_alive", "redact_url", "remove_declared",
    "remove_leftovers",
]
