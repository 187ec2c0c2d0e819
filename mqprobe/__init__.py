"""mqprobe: where does a group message's delay come from - the MQ, the server, or the last hop?"""

__version__ = "0.1.0"
