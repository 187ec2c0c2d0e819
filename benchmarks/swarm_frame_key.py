"""What the swarm pays per delivery to find a frame's decoded trace: the frame decoded and
looked up in its cache by the whole text (as before), or by its head (mqprobe.pieces.swarm.
FIELD_HEAD), for a 1 KB and a 20 KB (the seed's) message body.

    .venv/bin/python benchmarks/swarm_frame_key.py
"""

from __future__ import annotations

import timeit

from mqprobe.pieces.swarm import FIELD_HEAD


def per_call_us(statement, number: int = 20_000) -> float:
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6


def main() -> None:
    for size in (1024, 20480):
        raw = (b'42["message",{"mqprobe":[1,"4bf92f3577b34da6a3ce929d0e0e4736","17",12,"n1",'
               b'1,2,3,4],"body":"' + b"x" * size + b'"}]')
        cache: dict[str, object] = {}
        whole = per_call_us(lambda raw=raw, cache=cache: cache.get(raw.decode()))
        head = per_call_us(lambda raw=raw, cache=cache: cache.get(raw.decode()[:FIELD_HEAD]))
        print(f"{size} B body: decoded and looked up by the whole frame {whole:.2f} us, "
              f"by its head {head:.2f} us")


if __name__ == "__main__":
    main()
